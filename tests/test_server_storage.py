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

from mldash.server import chunks
from mldash.server.storage import HOT_LIMIT, Conflict, Store, StoreError, _lines_blob

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
    assert _lines_blob(tricky) == b"\n".join(orjson.dumps(p) for p in tricky)
    assert _lines_blob(tricky).count(b"\n") == 3  # a newline inside a string is escaped
    plain = pts(0, 50)
    assert _lines_blob(plain) == b"\n".join(orjson.dumps(p) for p in plain)


@pytest.mark.parametrize(
    "points, words",
    [
        ([[1, {}], [2, 3]], "points[1] must be [ms_epoch, {fields}]"),
        ([[1, {}], {"t": 1}], "points[1]"),
        ([[True, {}]], "points[0]"),
        ([["1", {}]], "points[0]"),
        ([[1, {}, 2]], "points[0]"),
        ([[2**63, {}]], "points[0]"),
        ([[1, {"deep": orjson.loads(b"[" * 300 + b"]" * 300)}]], "cannot be stored"),
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
