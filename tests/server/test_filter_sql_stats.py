"""Each series' headline last/min/max, kept at ingest: what ``metrics.<name>.last|min|max`` reads.

Checked against the local reader's rules (tests/server/test_filter_sql.py's
``series_stats``) over every point, whatever path the batches took: several
batches, retried and overlapping ones, PostgreSQL's one-statement append and the
general path, two server processes taking turns on one series, a database from
before the statistics (its columns dropped), points that an older server stored
without them, and series whose oldest points are cold chunks.
"""

from __future__ import annotations

import random

import orjson
import pytest
from sqlalchemy import select, text

from mldash import _codec, _filter
from mldash.server._filter_sql import compile_filter
from mldash.server.schema import experiments, series
from mldash.server.storage import Store

from test_filter_sql import T0, series_stats  # noqa: E402 (the reference)

NAN, INF = float("nan"), float("inf")


def wire(points):
    return orjson.loads(_codec.dumps(points))


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request, tmp_path):
    """``open_store()`` opens (another) Store on one fresh database."""
    db = f"sqlite:///{tmp_path}/db.sqlite" if request.param == "sqlite" else request.getfixturevalue("postgres").create_database()
    opened = []

    def open_one():
        store = Store(db, str(tmp_path / "chunks"))
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


def headline(store: Store, exp_id: int, name: str) -> dict:
    return store.metric_totals(exp_id)[name].get("headline")


def expected(store: Store, exp_id: int, name: str) -> dict:
    data = _codec.untag(store.read_metric(exp_id, name, 0, 10_000_000)["data"])
    return series_stats(data)


def same(got: dict | None, want: dict) -> bool:
    got = _codec.untag({k: v for k, v in (got or {}).items() if k != "key"})

    def norm(v):
        return "NaN" if isinstance(v, float) and v != v else (type(v).__name__, v)

    return {k: norm(v) for k, v in got.items()} == {k: norm(v) for k, v in want.items()}


def matching(store: Store, text_filter: str) -> set[str]:
    with store.reading() as conn:
        clause = compile_filter(_filter.parse(text_filter), conn.dialect.name)
        return {r[0] for r in conn.execute(select(experiments.c.prefix).where(clause))}


def test_batches_fold_into_what_the_whole_series_gives(open_store):
    store = open_store()
    exp_id = store.upsert_experiment("default", "p/run", {})["id"]
    rng = random.Random(7)
    values = [rng.choice([rng.random(), rng.randint(-5, 5), NAN, INF, -INF, 2**70, True, None, "s"]) for _ in range(3000)]
    pts = [[T0 + i, {"value": v, "step": i, "lr": rng.random()}] for i, v in enumerate(values)]
    for i in rng.sample(range(3000), 300):  # points with only a step (or an epoch): the headline moves there
        pts[i][1] = rng.choice([{"step": rng.randint(-10**6, 10**6)}, {"epoch": rng.random(), "step": i}, {"timestamp": i}])
    start = 0
    while start < len(pts):
        n = rng.randint(1, 400)
        overlap = rng.randint(0, min(start, 30))  # a retry resends some points already stored
        batch = pts[start - overlap : start + n]
        store.append_metrics(exp_id, [{"name": "loss", "start_index": start - overlap, "points": wire(batch)}])
        start += n
        got = headline(store, exp_id, "loss")
        assert same(got, expected(store, exp_id, "loss")), (start, got)
    keys = set()
    # and once more, batch by batch, as the headline moves between fields
    exp_id = store.upsert_experiment("default", "p/moving", {})["id"]
    for start in range(0, 3000, 97):
        store.append_metrics(exp_id, [{"name": "loss", "start_index": start, "points": wire(pts[start : start + 97])}])
        got = headline(store, exp_id, "loss")
        keys.add(got.get("key"))
        assert same(got, expected(store, exp_id, "loss")), (start, got)
    assert "value" in keys and len(keys & {"step", "epoch", "timestamp"}) >= 2


def test_two_processes_taking_turns_on_one_series(open_store):
    """Each keeps the statistics it stored; the other's batches in between send it the long way."""
    a, b = open_store(), open_store()
    exp_id = a.upsert_experiment("default", "p/run", {})["id"]
    one_statement = []
    for store in (a, b):
        def spy(exp, batch, _real=store._metrics._append_where_it_ends):
            done = _real(exp, batch)
            one_statement.append(done is not None)
            return done
        store._metrics._append_where_it_ends = spy
    total = 0
    for k in range(12):
        writer = (a, b)[k % 3 == 2]
        pts = [[T0 + total + i, {"value": (total + i) * (-1) ** k, "step": total + i}] for i in range(50)]
        writer.append_metrics(exp_id, [{"name": "loss", "start_index": total, "points": wire(pts)}])
        total += 50
        for store in (a, b):
            assert same(headline(store, exp_id, "loss"), expected(store, exp_id, "loss"))
    if not a.is_sqlite:  # PostgreSQL: a batch after one's own takes the one-statement append
        assert one_statement == [False, True, False] * 4, one_statement
    assert headline(a, exp_id, "loss")["min"] == -599 and headline(a, exp_id, "loss")["max"] == 549


def test_a_database_from_before_the_statistics_is_filled_on_open(open_store, tmp_path):
    """The columns dropped (the schema of a store made before them): opening the store
    adds them and fills every series, its cold chunks too; filters then see them."""
    store = open_store()
    ids = []
    for r in range(3):
        exp_id = store.upsert_experiment("default", f"p/run{r}", {})["id"]
        ids.append(exp_id)
        for start in range(0, 12_000 if r == 0 else 40, 1000 if r == 0 else 10):
            n = 1000 if r == 0 else 10
            pts = [[T0 + i, {"value": float(i % 997) - r, "step": i}] for i in range(start, start + n)]
            store.append_metrics(exp_id, [{"name": "loss", "start_index": start, "points": pts},
                                          {"name": "acc", "start_index": start, "points": [[T0, {"acc": r + i / 10}] for i in range(n)]}])
    store.wait_for_compaction(60)
    with store.reading() as conn:
        assert conn.execute(select(series.c.cold_count).where(series.c.experiment_id == ids[0], series.c.name == "loss")).scalar() > 0
    store.close()
    with store.engine.begin() as conn:
        for column in ("stats", "headline"):
            conn.execute(text(f"ALTER TABLE series DROP COLUMN {column}"))
    reopened = open_store()
    for exp_id in ids:
        for name in ("loss", "acc"):
            assert same(headline(reopened, exp_id, name), expected(reopened, exp_id, name)), (exp_id, name)
    assert matching(reopened, "metrics.loss.min < -1") == {"p/run2"}
    assert matching(reopened, "metrics.loss.max = 996") == {"p/run0"}
    assert matching(reopened, "metrics.acc.min >= 2") == {"p/run2"}


def test_points_an_older_server_stored_are_caught_up(open_store):
    """An older server appends without touching the statistics: the next batch (and a
    restart) fold in what they miss."""
    store = open_store()
    exp_id = store.upsert_experiment("default", "p/run", {})["id"]
    store.append_metrics(exp_id, [{"name": "loss", "start_index": 0, "points": [[T0, {"value": 5}]]}])
    # what an older server does: the batch row and the total, nothing else
    line = orjson.dumps([T0 + 1, {"value": -100}])
    with store.engine.begin() as conn:
        sid = conn.execute(select(series.c.id)).scalar()
        conn.execute(text("INSERT INTO metric_batches (series_id, start_idx, n_points, first_ts, last_ts, lines) VALUES (:s, 1, 1, 0, 0, :l)"), {"s": sid, "l": line})
        conn.execute(text("UPDATE series SET total = 2, last_line = :l WHERE id = :s"), {"s": sid, "l": line})
    assert headline(store, exp_id, "loss")["min"] == 5  # stale until caught up
    other = open_store()  # a restart fills it
    assert headline(other, exp_id, "loss") == {"key": "value", "last": -100, "min": -100, "max": 5}
    with store.engine.begin() as conn:  # the older server again
        line = orjson.dumps([T0 + 2, {"value": 1000}])
        conn.execute(text("INSERT INTO metric_batches (series_id, start_idx, n_points, first_ts, last_ts, lines) VALUES (:s, 2, 1, 0, 0, :l)"), {"s": sid, "l": line})
        conn.execute(text("UPDATE series SET total = 3, last_line = :l WHERE id = :s"), {"s": sid, "l": line})
    for writer in (store, other):  # the next batch, whichever process takes it
        total = writer.progress(exp_id)["metrics"]["loss"]
        writer.append_metrics(exp_id, [{"name": "loss", "start_index": total, "points": [[T0 + total, {"value": 0}]]}])
    assert headline(store, exp_id, "loss") == {"key": "value", "last": 0, "min": -100, "max": 1000}


def test_a_last_value_holding_nul_reads_as_missing(open_store):
    store = open_store()
    exp_id = store.upsert_experiment("default", "p/run", {})["id"]
    store.append_metrics(exp_id, [{"name": "note", "start_index": 0, "points": [[T0, {"value": 1}], [T0, {"value": "a\x00b"}]]}])
    assert headline(store, exp_id, "note") == {"key": "value", "min": 1, "max": 1}
    assert matching(store, "metrics.note.last = null") == {"p/run"}
    assert matching(store, "metrics.note.max = 1") == {"p/run"}


def test_the_listing_carries_each_series_headline(open_store):
    store = open_store()
    exp_id = store.upsert_experiment("default", "p/run", {})["id"]
    store.append_metrics(exp_id, [{"name": "loss", "start_index": 0, "points": wire([[T0, {"value": 2.0}], [T0, {"value": NAN}]])}])
    row = store.list_experiments()["experiments"][0]
    assert row["metric_stats"] == {"loss": {"key": "value", "last": {"$float": "NaN"}, "min": 2.0, "max": 2.0}}
    assert store.get_experiment(exp_id)["metric_stats"] == row["metric_stats"]
