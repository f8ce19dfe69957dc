"""Hostile inputs, kept as data: each row is a value and the error it must get.

The Python API (tests/core/test_api_hostile.py), the server's API and the dashboard
use these tables, so a new field gets the same treatment by adding it to the
fields of a test, and a new trick by adding a row here.
"""

from __future__ import annotations

BIG = 2**70

# A value that must never become (part of) a folder's name, and why.
BAD_PATH_PARTS = [
    ("../../x", ValueError, "must not contain '/'"),
    ("..", ValueError, "leave its folder"),
    (".", ValueError, "leave its folder"),
    ("/abs/path", ValueError, "must not contain '/'"),
    ("a/b", ValueError, "must not contain '/'"),
    ("a\\b", ValueError, "must not contain '/' or '\\\\'"),
    ("", ValueError, "must not be empty"),
    ("   ", ValueError, "must not be empty"),
    (" padded", ValueError, "white space"),
    ("nul\x00byte", ValueError, "control character"),
    ("new\nline", ValueError, "control character"),
    ("del\x7f", ValueError, "control character"),
    ("c1\x85", ValueError, "control character"),
    ("bidi\u202eoverride", ValueError, "control character"),
    ("\ud800", ValueError, "not valid Unicode"),
    ("lone\udfffsurrogate", ValueError, "not valid Unicode"),
    (".hidden", ValueError, "must not start with '.'"),
    ("x" * 201, ValueError, "at most 200"),
    (123, TypeError, "must be a str"),
    (b"bytes", TypeError, "must be a str"),
]

# A "/"-separated name (prefix, folder, metric name): every bad part, and the whole.
BAD_PATHS = [
    ("a/../b", ValueError, "leave its folder"),
    ("/etc/passwd", ValueError, "must be relative"),
    ("a//b", ValueError, "must not be empty"),
    ("a/", ValueError, "must not be empty"),
    ("a/.b", ValueError, "must not start with '.'"),
    ("a/\x00", ValueError, "control character"),
    ("a/\ud800", ValueError, "not valid Unicode"),
    ("a/" * 600, ValueError, "at most 1000"),
    (123, TypeError, "must be a str"),
]

# A label that is not a path (a tag, a metric field name): "/" and dots are fine.
BAD_LABELS = [
    ("", ValueError, "must not be empty"),
    ("  ", ValueError, "must not be empty"),
    ("nul\x00", ValueError, "control character"),
    ("tab\there", ValueError, "control character"),
    ("\ud800", ValueError, "not valid Unicode"),
    ("x" * 201, ValueError, "at most 200"),
    (7, TypeError, "must be a str"),
]
GOOD_LABELS = ["train/loss", ".5x", "α-β", "a b"]

BAD_NAMESPACES = [
    ("../x", ValueError, "namespace must be"),
    ("a b", ValueError, "namespace must be"),
    ("..", ValueError, "namespace must be"),
    ("-x", ValueError, "namespace must be"),
    ("", ValueError, "namespace must be"),
    ("n" * 101, ValueError, "namespace must be"),
    ("ns\x00", ValueError, "namespace must be"),
    (5, TypeError, "namespace must be a str"),
]

# Text in a document (parameters, summary, description, checkpoint path): no NUL.
BAD_DOCUMENT_TEXT = [
    ("nul\x00here", ValueError, "NUL"),
    ("\ud800", ValueError, "not valid Unicode"),
    ("x" * 1_000_001, ValueError, "at most 1,?000"),  # as a key: at most 1000
]
# Text in a metric value or a log message: NUL is data there, the rest is not.
BAD_TEXT = [
    ("\ud800", ValueError, "not valid Unicode"),
    ("ok\udcffthen", ValueError, "not valid Unicode"),
    ("x" * 1_000_001, ValueError, "at most 1,000,000"),
]
# Accepted everywhere they may appear, and stored exactly.
GOOD_VALUES = [0, -1, BIG, -BIG, 2**64 - 1, 2**64, 1.5, True, None, "", "naïve ☃", "tab\tand\nnewline"]

# Saved files (exp.files(...), the server's /files records): each part of a prefix and
# the file name take BAD_PATH_PARTS (a prefix may start or end with "/"); tags take
# BAD_LABELS; and these.
BAD_FILE_PREFIXES = [
    ("../x", ValueError, "leave its folder"),
    ("/a/../b", ValueError, "leave its folder"),
    ("a//b", ValueError, "empty folder name"),
    ("//", ValueError, "empty folder name"),
    ("/.hidden", ValueError, "must not start with '.'"),
    ("a/\x00", ValueError, "control character"),
    ("a/\ud800", ValueError, "not valid Unicode"),
    ("/" + "a/" * 600, ValueError, "at most 1000"),
    (7, TypeError, "must be a str"),
]
BAD_FILE_NAMES = [
    ("..", ValueError, "leave its folder"),
    (".", ValueError, "leave its folder"),
    ("", ValueError, "must not be empty"),
    ("nul\x00.pt", ValueError, "control character"),
    ("\ud800.pt", ValueError, "not valid Unicode"),
    ("é" * 150, ValueError, "more than 255 bytes"),  # 150 characters, 300 bytes
    ("x" * 300, ValueError, "at most 200"),
    ("a\\b.pt", ValueError, "must not contain"),
    (".env", ValueError, "must not start with '.'"),
    (5, TypeError, "must be a str"),
]
BAD_FILE_METADATA = [
    ("not a dict", TypeError, "must be a dict"),
    ([1, 2], TypeError, "must be a dict"),
    ({"a": object()}, TypeError, "not a JSON value"),
    ({"a": {1, 2}}, TypeError, "not a JSON value"),
    ({1: "x"}, TypeError, "keys must be str"),
    ({"$float": "NaN"}, ValueError, "reserved"),
    ({"a": "nul\x00"}, ValueError, "NUL"),
    ({"a": "\ud800"}, ValueError, "not valid Unicode"),
]
BAD_FILE_TAGS = [
    ("best", TypeError, "must be a list of str"),
    ([1], TypeError, "must be a str"),
    (["nul\x00"], ValueError, "control character"),
    ([""], ValueError, "must not be empty"),
    (["\ud800"], ValueError, "not valid Unicode"),
]
BAD_FILE_IDS = [
    ("../x", ValueError, "file_id must be"),
    ("", ValueError, "file_id must be"),
    ("a" * 65, ValueError, "file_id must be"),
    (5, TypeError, "file_id must be a str"),
]
