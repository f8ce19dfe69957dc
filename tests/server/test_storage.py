"""The server's metric storage, in process on SQLite: hot points as one row per
ingested batch, compacted into fixed-size cold chunks, read back with no seam.

The HTTP tests (test_server.py) run the same guarantees through a real server on
both backends; these pin down the batch-row edge cases quickly and exactly.
"""

from __future__ import annotations

import random
import sqlite3

import orjson
import pytest

from hostile_inputs import BAD_DOCUMENT_TEXT, BAD_LABELS, BAD_NAMESPACES, BAD_PATHS, BAD_TEXT, GOOD_VALUES
from mldash import _codec
from mldash.server import chunks
from mldash.server._validation import lines_blob
from mldash.server.storage import HOT_LIMIT, Conflict, Store, StoreError



pytestmark = pytest.mark.timeout(120)
T0 = 1_700_000_000_000


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/db.sqlite", str(tmp_path / "chunks"))
    yield s
    s.close()


def pts(start: int, stop: int) -> list:
    return [[T0 + i, {"value": i / 2, "step": i}] for i in range(start, stop)]


def append(store, exp_id, start, points, name="loss"):
    return store.append_metrics(exp_id, [{"name": name, "start_index": start, "points": points}])


def steps(store, exp_id, start=0, limit=1_000_000, name="loss"):
    return [p["data"]["step"] for p in store.read_metric(exp_id, name, start, limit)["data"]]


def rows(tmp_path, sql):
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        return conn.execute(sql).fetchall()


def test_each_ingested_batch_is_one_row_whatever_its_size(store, tmp_path):
    exp_id = store.upsert_experiment("default", "p/r", {})["id"]
    append(store, exp_id, 0, pts(0, 1000))
    append(store, exp_id, 1000, pts(1000, 1001))
    append(store, exp_id, 1001, pts(1001, 4000))
    assert rows(tmp_path, "SELECT start_idx, n_points FROM metric_batches ORDER BY start_idx") == [(0, 1000), (1000, 1), (1001, 2999)]
    assert steps(store, exp_id) == list(range(4000))


def test_retries_and_overlaps_store_only_the_part_beyond_the_stored_count(store, tmp_path):
    exp_id = store.upsert_experiment("default", "p/r", {})["id"]
    assert append(store, exp_id, 0, pts(0, 100)) == {"accepted": 100, "counts": {"loss": 100}}
    assert append(store, exp_id, 0, pts(0, 100)) == {"accepted": 0, "counts": {"loss": 100}}  # a retry: a no-op
    assert append(store, exp_id, 20, pts(20, 50)) == {"accepted": 0, "counts": {"loss": 100}}  # wholly below
    assert append(store, exp_id, 90, pts(90, 130)) == {"accepted": 30, "counts": {"loss": 130}}  # trimmed
    with pytest.raises(Conflict, match="send from index 130"):
        append(store, exp_id, 131, pts(131, 140))
    assert rows(tmp_path, "SELECT start_idx, n_points FROM metric_batches ORDER BY start_idx") == [(0, 100), (100, 30)]
    assert steps(store, exp_id) == list(range(130))


def test_a_gap_in_one_series_stores_nothing_of_the_request(store):
    exp_id = store.upsert_experiment("default", "p/r", {})["id"]
    append(store, exp_id, 0, pts(0, 10), name="b")
    with pytest.raises(Conflict):
        store.append_metrics(exp_id, [
            {"name": "a", "start_index": 0, "points": pts(0, 10)},
            {"name": "b", "start_index": 50, "points": pts(50, 60)},
        ])
    assert store.progress(exp_id)["metrics"] == {"b": 10}


def test_compaction_cuts_batches_at_chunk_boundaries_and_reads_have_no_seam(store, tmp_path):
    exp_id = store.upsert_experiment("default", "p/r", {})["id"]
    rng = random.Random(7)
    total = 0
    while total < 34_567:  # batches of odd sizes, so chunk edges fall inside batch rows
        n = rng.randint(1, 2500)
        append(store, exp_id, total, pts(total, total + n))
        total += n
    assert store.wait_for_compaction(60)
    (stored_total, cold), = rows(tmp_path, "SELECT total, cold_count FROM series")
    assert stored_total == total and cold == 30_000 and total - cold <= HOT_LIMIT
    hot = rows(tmp_path, "SELECT start_idx, n_points FROM metric_batches ORDER BY start_idx")
    assert hot[0][0] == cold and sum(n for _, n in hot) == total - cold  # the hot rows tile [cold, total)
    assert [c[0] for c in rows(tmp_path, "SELECT first_index FROM metric_chunks ORDER BY chunk_no")] == [0, 10_000, 20_000]

    assert steps(store, exp_id) == list(range(total))
    for _ in range(60):
        start, limit = rng.randrange(0, total + 5), rng.choice([0, 1, 7, 1000, 12_000])
        assert steps(store, exp_id, start, limit) == list(range(start, min(start + limit, total))), (start, limit)
    # A chunk holds exactly the lines that were sent.
    first = rows(tmp_path, "SELECT key FROM metric_chunks WHERE chunk_no = 1")[0][0]
    lines = chunks.decode_all((tmp_path / "chunks" / first).read_bytes())
    assert lines == [orjson.dumps(p) for p in pts(10_000, 20_000)]
    # Retrying a batch that is already cold still adds nothing.
    assert append(store, exp_id, 5, pts(5, 500))["accepted"] == 0


def test_a_batch_far_past_the_hot_limit_is_compacted_before_its_request_returns(store, tmp_path):
    exp_id = store.upsert_experiment("default", "p/r", {})["id"]
    append(store, exp_id, 0, pts(0, 3))
    append(store, exp_id, 3, pts(3, 75_003))  # one row of 75,000 points: past MAX_HOT
    (total, cold), = rows(tmp_path, "SELECT total, cold_count FROM series")
    assert (total, cold) == (75_003, 70_000)  # no waiting for the background compactor
    assert rows(tmp_path, "SELECT start_idx, n_points FROM metric_batches") == [(70_000, 5_003)]
    assert steps(store, exp_id, 69_990, 20) == list(range(69_990, 70_010))


def test_lines_are_exactly_one_compact_json_line_per_point_even_with_tricky_fields():
    tricky = [[1, {"s": "}],["}], [2.5, {"nested": [[{"a": 1}], [{"b": 2}]]}], [3, {"nl": "a\nb", "u": "é"}], [4, {}]]
    assert lines_blob(tricky) == b"\n".join(orjson.dumps(p) for p in tricky)
    assert lines_blob(tricky).count(b"\n") == 3  # a newline inside a string is escaped
    plain = pts(0, 50)
    assert lines_blob(plain) == b"\n".join(orjson.dumps(p) for p in plain)


@pytest.mark.parametrize(
    "points, words",
    [
        ([[1, {}], [2, 3]], "points[1] must be [ms_epoch, {fields}]"),
        ([[1, {}], {"t": 1}], "points[1]"),
        ([[True, {}]], "points[0]"),
        ([["1", {}]], "points[0]"),
        ([[1, {}, 2]], "points[0]"),
        ([[2**63, {}]], "points[0]"),
        ([[1, {"deep": orjson.loads(b"[" * 300 + b"]" * 300)}]], "nests more than"),
    ],
)
def test_bad_points_are_refused_with_a_clear_message_and_nothing_stored(store, points, words):
    exp_id = store.upsert_experiment("default", "p/r", {})["id"]
    with pytest.raises(StoreError, match=words.replace("[", r"\[").replace("]", r"\]").replace("{", r"\{").replace("}", r"\}")):
        append(store, exp_id, 0, points)
    assert store.progress(exp_id)["metrics"] == {}


def test_a_store_from_before_batch_rows_is_migrated_on_open(tmp_path):
    """Stores written by earlier versions held one metric_points row per point."""
    store = Store(f"sqlite:///{tmp_path}/db.sqlite", str(tmp_path / "chunks"))
    exp_id = store.upsert_experiment("default", "p/r", {})["id"]
    append(store, exp_id, 0, pts(0, 2500))
    store.close()
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:  # rewrite the hot tier the old way
        conn.execute("CREATE TABLE metric_points (series_id INTEGER, idx BIGINT, ts BIGINT, line BLOB, PRIMARY KEY (series_id, idx))")
        conn.executemany("INSERT INTO metric_points VALUES (1, ?, ?, ?)", [(i, T0 + i, orjson.dumps(p)) for i, p in enumerate(pts(0, 2500))])
        conn.execute("DELETE FROM metric_batches")

    store = Store(f"sqlite:///{tmp_path}/db.sqlite", str(tmp_path / "chunks"))
    try:
        assert steps(store, exp_id) == list(range(2500))
        assert rows(tmp_path, "SELECT start_idx, n_points FROM metric_batches ORDER BY start_idx") == [(0, 1000), (1000, 1000), (2000, 500)]
        assert rows(tmp_path, "SELECT name FROM sqlite_master WHERE name = 'metric_points'") == []
        assert append(store, exp_id, 2500, pts(2500, 2600))["counts"] == {"loss": 2600}
    finally:
        store.close()


# ---- the server takes exactly what the local API takes (issue 11, items 4 and 8) ------------
# Rows come from tests/hostile_inputs.py, the tables the local API is tested with, so
# the two can never drift apart. Run on SQLite and on PostgreSQL: NUL reaches the
# two differently (PostgreSQL's JSONB and text cannot hold it; lines are bytes).


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/db.sqlite"
    else:
        url = request.getfixturevalue("postgres").create_database()
    s = Store(url, str(tmp_path / "chunks"))
    yield s
    s.close()


def _refusals():
    rows = []
    for value, _error, words in BAD_PATHS:
        rows.append(("metric name", value, words, lambda s, e, v: s.append_metrics(e, [{"name": v, "start_index": 0, "points": [[1, {"v": 1}]]}])))
        rows.append(("prefix", value, words, lambda s, e, v: s.upsert_experiment("default", v, {})))
    for value, _error, words in BAD_LABELS:
        rows.append(("metric field name", value, words, lambda s, e, v: s.append_metrics(e, [{"name": "m", "start_index": 0, "points": [[1, {v: 1}]]}])))
        rows.append(("tag", value, "meta.tags", lambda s, e, v: s.upsert_experiment("default", "p/t", {"tags": [v]})))
    for value, _error, words in BAD_NAMESPACES:
        rows.append(("namespace", value, words, lambda s, e, v: s.upsert_experiment(v, "p/n", {})))
    for value, _error, words in BAD_DOCUMENT_TEXT:
        rows.append(("parameter value", value, words, lambda s, e, v: s.set_document(e, "parameters", {"k": v})))
        rows.append(("parameter name", value, words, lambda s, e, v: s.set_document(e, "parameters", {v: 1})))
        rows.append(("summary value", value, words, lambda s, e, v: s.set_document(e, "summary", {"k": v})))
        rows.append(("description", value, words, lambda s, e, v: s.patch_experiment(e, {"description": v})))
        rows.append(("a best checkpoint's path", value, words, lambda s, e, v: s.append_checkpoints(e, 0, [{"timestamp": 1.0, "path": v, "is_best": True}])))
    for value, _error, words in BAD_TEXT:
        rows.append(("metric string", value, words, lambda s, e, v: s.append_metrics(e, [{"name": "m", "start_index": 0, "points": [[1, {"s": v}]]}])))
        rows.append(("log message", value, words, lambda s, e, v: s.append_logs(e, 0, [{"timestamp": 1.0, "level": "info", "message": v}])))
        rows.append(("log metadata", value, words, lambda s, e, v: s.append_logs(e, 0, [{"timestamp": 1.0, "message": "m", "metadata": {"k": v}}])))
    return rows


REFUSALS = _refusals()


@pytest.mark.parametrize("what, value, words, call", REFUSALS, ids=[f"{r[0]}={str(r[1])[:20]!r}" for r in REFUSALS])
def test_the_store_refuses_what_the_local_api_refuses_with_the_same_reason(any_store, what, value, words, call):
    exp_id = any_store.upsert_experiment("default", "p/r", {"local_id": "run"})["id"]
    with pytest.raises(StoreError, match=words):
        call(any_store, exp_id, value)
    held = any_store.progress(exp_id)
    assert (held["metrics"], held["logs"], held["checkpoints"]) == ({}, 0, 0)
    assert any_store.get_document(exp_id, "parameters") == {} and "description" not in any_store.get_experiment(exp_id)


ACCEPTED = [*GOOD_VALUES, "a\x00b", "\x00" * 1000, "x\x00" * 400_000, "€" * 300_000, -(2**200), float("nan"), float("-inf")]


@pytest.mark.parametrize("value", ACCEPTED, ids=[repr(v)[:20] for v in ACCEPTED])
def test_the_api_keeps_what_the_local_api_accepts_exactly(any_store, value):
    """Through the HTTP app (in process), as the uploader sends it and a reader reads it."""
    from fastapi.testclient import TestClient

    from mldash.server.app import create_app

    def same(a, b):
        return _codec.dumps(a, option=orjson.OPT_SORT_KEYS) == _codec.dumps(b, option=orjson.OPT_SORT_KEYS)

    with TestClient(create_app(any_store, ui=False), base_url="http://t/api/v1") as api:
        def call(method, path, body=None):
            response = api.request(method, path, content=None if body is None else _codec.dumps(body),
                                   headers={"Content-Type": "application/json"})
            assert response.status_code == 200, response.text
            return _codec.loads(response.content)

        exp_id = call("POST", "/experiments", {"prefix": "p/r", "meta": {"local_id": "run"}})["id"]
        call("POST", f"/experiments/{exp_id}/metrics", {"series": [{"name": "m", "start_index": 0, "points": [[T0, {"v": value}]]}]})
        assert same(call("GET", f"/experiments/{exp_id}/metrics/read?name=m")["data"][0]["data"], {"v": value})
        message = value if isinstance(value, str) else "m"
        log = {"timestamp": 1.5, "level": "warn", "message": message, "metadata": {"v": value, "l": [value]}}
        call("POST", f"/experiments/{exp_id}/logs", {"start_index": 0, "records": [log]})
        record = call("GET", f"/experiments/{exp_id}/logs")["data"][0]
        assert record["message"] == message and same(record["metadata"], {"v": value, "l": [value]})
        call("POST", f"/experiments/{exp_id}/checkpoints", {"start_index": 0, "records": [{"timestamp": 1.5, "path": "ck/1.pt", "info": value}]})
        assert same(call("GET", f"/experiments/{exp_id}")["checkpoints"][0]["info"], value)
        if not (isinstance(value, str) and "\x00" in value):  # documents hold no NUL, as locally
            for kind in ("parameters", "summary"):
                call("PUT", f"/experiments/{exp_id}/documents/{kind}", {"k": value})
                assert same(call("GET", f"/experiments/{exp_id}/documents/{kind}"), {"k": value})
            call("PATCH", f"/experiments/{exp_id}", {"meta": {"note": value}})
            assert same(call("GET", f"/experiments/{exp_id}")["note"], value)


def test_a_second_run_under_a_held_prefix_is_refused_and_the_same_run_merges(any_store):
    first = any_store.upsert_experiment("team", "p/shared", {"local_id": "aaa", "status": "RUNNING"})
    assert any_store.upsert_experiment("team", "p/shared", {"local_id": "aaa", "status": "COMPLETED"})["id"] == first["id"]
    with pytest.raises(StoreError, match="local id aaa.*local id is bbb") as refused:
        any_store.upsert_experiment("team", "p/shared", {"local_id": "bbb", "status": "RUNNING"})
    assert refused.value.status == 409 and refused.value.code == "collision"
    with pytest.raises(StoreError, match="local id is bbb"):
        any_store.patch_experiment(first["id"], {"local_id": "bbb"})
    assert any_store.upsert_experiment("other", "p/shared", {"local_id": "bbb"})["id"] != first["id"]
    assert any_store.get_experiment(first["id"])["status"] == "COMPLETED"
    assert any_store.progress(first["id"])["local_id"] == "aaa"
