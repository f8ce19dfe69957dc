"""The codec's tags: what ``is_tag`` accepts, the reader can always decode (a stored
document nobody can read back would be lost)."""

from __future__ import annotations

import orjson
import pytest

from mldash import _codec
from mldash._checks import check_json


@pytest.mark.parametrize("text", ["5", "-5", "0", str(2**70), "-" + str(2**100)])
def test_an_int_tag_that_is_accepted_decodes(text):
    assert _codec.is_tag({"$int": text})
    assert _codec.loads(orjson.dumps({"x": {"$int": text}})) == {"x": int(text)}


@pytest.mark.parametrize("text", ["--5", "-", "", "5-", "+5", " 5", "٣", "1_000", "0x10", 5])
def test_a_malformed_int_tag_is_no_tag_and_the_checks_refuse_it(text):
    assert not _codec.is_tag({"$int": text})
    with pytest.raises(ValueError, match="reserved"):
        check_json({"field": {"$int": text}}, "document", tagged=True)
