"""The server's filter SQL against the Python evaluator: the same runs, the same answers.

``RUNS`` are stored through the Store (documents, meta and metric points as the HTTP
API receives them: NaN, infinities and big ints tagged) on SQLite and on PostgreSQL.
For every filter of ``FILTERS`` the runs ``_filter.matches`` accepts, looking each
key up in what the store reads back, must be exactly the runs the compiled SQL
returns on each database. The values are chosen to hit every rule of
mldash/_filter.py's docstring: missing keys and nulls, kinds that never compare
(numbers, strings, bools, lists, objects), NaN and infinities, integers past 53 and
64 bits against floats, unicode and code point order, keys a JSON path cannot
spell, tags, times and a running run's duration, and each metric's headline.
"""

from __future__ import annotations

import fnmatch
import re
import time
import uuid

import orjson
import pytest
from sqlalchemy import select

from mldash import _codec, _filter
from mldash._runfolder import headline as runfolder_headline
from mldash.server._filter_sql import BadFilter, compile_filter, pg_regex
from mldash.server.schema import experiments
from mldash.server.storage import Store

NOW = 1_800_000_000.0
NAN, INF = float("nan"), float("inf")
T0 = 1_700_000_000_000


def _tagged(value):
    """A value as a client sends it over HTTP (NaN, infinities and big ints tagged)."""
    return orjson.loads(_codec.dumps(value))


def points(*values, field="value"):
    return [[T0 + i, v if isinstance(v, dict) else {field: v, "step": i}] for i, v in enumerate(values)]


# x: one key of every kind, so that kinds meet each other in every comparison.
X_VALUES = [
    1, 1.0, "1", True, False, None, [1, "a", None, True, 2.5], NAN, INF, -INF, 2**64 - 1, 2**63, -(2**63), 2**70,
    -(2**70), 9007199254740993, 9007199254740992.0, 1e23, 10**23, 1e16, "café", "日本😀", "", -0.0, 0, [], {"a": 1},
    0.1, 1.5e-7, "resnet50", "Resnet-50\nv2", "a*b?c[d]", "100%_sure\\", 2.5, -7, "ÿ", "\U0010fffd",
]

RUNS = []
for i, x in enumerate(X_VALUES):
    params = {"x": x, "i": i, "lr": [1e-2, 1e-3, 1e-4, 3e-4][i % 4], "model.arch": ["resnet50", "vit-b/16", "ResNet18", "mlp"][i % 4]}
    if i % 5 == 0:
        params['q"k'] = i
        params["back\\slash"] = f"v{i}"
        params["a.b"] = i * 0.5
        params["uni é 😀"] = "ü" * (i % 3)
        params["tab\tkey"] = i % 2 == 0
    if i % 7 == 3:
        params.pop("lr")
    summary = {"acc": 0.5 + i / 100, "best": [None, 1, "x", True, 2**70][i % 5]}
    if i % 6 == 1:
        summary["acc"] = NAN
    meta = {
        "status": [None, "RUNNING", "COMPLETED", "FAILED", "CANCELLED"][i % 5],
        "tags": [[], ["baseline"], ["baseline", "sweep-1"], ["sweep-2", "ü"], None, ["a*b"]][i % 6],
        "description": [None, "first try", "", "résumé of a run", "100% done"][i % 5],
        "created_at": None if i % 4 == 0 else NOW - 86400 * i,
        "started_at": None if i % 9 == 4 else NOW - 3600 * (i + 1) + (0.5 if i % 2 else 0),
        "finished_at": None if i % 5 in (0, 1) else NOW - 60 * i,
        "duration": None if i % 8 == 2 else [0.42, 12.3, 90, 3600 * 25, 600.0][i % 5],
    }
    if i % 5 == 1 and i % 3 == 0:
        meta["resumed_at"] = NOW - 120
    if i % 10 == 7:
        meta["resumed_at"] = 0  # falsy: counts from started_at
    if i % 11 == 5:
        meta["name"] = "renamed-" + str(i)
    if i % 11 == 6:
        meta["name"] = ""
    folder = ["", "sweeps/", "a/b/"][i % 3]
    metrics = {
        "loss": points(*[1.0 / (k + 1 + i) for k in range(6)]),
        "val/acc": points(*[0.1 * k + i / 1000 for k in range(4)], field="acc"),
    }
    odd = [
        points(1, 2.5, NAN, -1),  # NaN in the middle: min/max leave it out
        points(NAN),  # last is NaN, no min/max
        points(3, INF, -INF, 0),  # infinities count
        points(2**70, 5, -(2**70)),  # big ints
        points(True, False),  # bools are not numbers for min/max
        points({"step": 1}, {"step": 7}),  # no value and no other number: the first field
        points({"value": 1, "step": 0}, {"label": "done", "step": 1}),  # headline moves to the last point's field
        points({"value": "text"}, {"value": "more text"}),
        points({}, {}),  # no fields: no headline
        points(1, 1.0, 1),  # ties keep the first seen
        points(9007199254740993, 9007199254740992.0),
        points(None, None),
        points([1, 2], [3, "a"]),
    ]
    metrics["odd"] = odd[i % len(odd)]
    if i % 4 == 0:
        metrics["sys/cpu"] = points(*[10.0 + k for k in range(3)], field="cpu")
    if i % 9 == 0:
        metrics.pop("val/acc")
    RUNS.append({"prefix": f"proj{i % 3}/{folder}run-{i:02d}", "meta": meta, "params": params, "summary": summary, "metrics": metrics})
RUNS.append({"prefix": "empty/nothing", "meta": {}, "params": {}, "summary": {}, "metrics": {}})

FILTERS = [
    # numbers against every kind
    "params.x = 1", "params.x != 1", "params.x = 1.0", "params.x < 1", "params.x <= 1", "params.x > 1", "params.x >= 1",
    "params.x > 0", "params.x < 0", "params.x = 0", "params.x != 0", "params.x = -0.0", "params.x >= -1e308",
    "params.x = 18446744073709551615", "params.x > 18446744073709551614", "params.x < 18446744073709551615",
    "params.x = 9223372036854775808", "params.x > 9223372036854775807", "params.x = -9223372036854775808",
    "params.x < -9223372036854775808", "params.x = 1180591620717411303424", "params.x >= 1180591620717411303424",
    "params.x > 1180591620717411303423.5", "params.x = 1.1805916207174113e21", "params.x < -1180591620717411303423",
    "params.x = 9007199254740993", "params.x = 9007199254740992", "params.x > 9007199254740992",
    "params.x = 9007199254740993.0", "params.x < 9007199254740993", "params.x = 1e23", "params.x > 1e23",
    "params.x = 100000000000000000000000", "params.x < 100000000000000000000000", "params.x = 1e16",
    "params.x = 10000000000000000", "params.x = 0.1", "params.x < 0.1", "params.x = 1.5e-7", "params.x > 1e300",
    "params.x < 123456789012345678901234567890123456789012345678901234567890",
    "params.x > -123456789012345678901234567890123456789012345678901234567890",
    "params.x = 2.5", "params.x != 2.5", "params.x in [1, 2.5, -7]", "params.x not in [1, 2.5, -7]",
    # long lists: one membership test (arrays, IN lists) instead of one comparison a value
    "params.x in [1, 2.5, -7, 18446744073709551615, 9223372036854775808, 1180591620717411303424, 0.1, 1e23]",
    "params.x in [100000000000000000000000, 1e16, 9007199254740993, 9007199254740992, -0.0, 1.5e-7, -9223372036854775808]",
    "params.x not in [-1180591620717411303424, 10000000000000000, 9007199254740993.0, 1.0000000000000002, 3, 4, 5]",
    'params.x in ["1", "café", "", "resnet50", "ÿ", "x", "y", 1, true, null]',
    'tags in ["baseline", "ü", "a*b", "x", "y", "z"]', "metrics.odd.last in [7, 0, 1, 2, 3, -1, 1180591620717411303424]",
    # alternatives of one key merge into one list
    'params.x = 1 or params.x = "1" or params.x = true or params.x = null or params.x in [2.5, -7] or params.i = 3',
    'status = FAILED or status = null or prefix = "proj1/run-01" or status in [CANCELLED]',
    "metrics.odd.last = 7 or metrics.odd.last = null or metrics.odd.min = -1 or metrics.odd.last in [0, 1]",
    # strings, bools, null
    'params.x = "1"', 'params.x != "1"', 'params.x < "b"', 'params.x >= "caf"', 'params.x > "ÿ"', 'params.x < "\\u00ff"',
    'params.x = "café"', 'params.x = ""', 'params.x != ""', 'params.x > ""', "params.x = true", "params.x = false",
    "params.x != true", "params.x = null", "params.x != null", 'params.x in ["1", 1, true]',
    'params.x contains "a"', 'params.x contains "é"', "params.x contains 1", "params.x contains null", "params.x contains true",
    'params.x contains ""', "params.x contains 2.5",
    # glob and regex
    'params.x ~ "*"', 'params.x ~ "res*"', 'params.x ~ "?esnet*"', 'params.x ~ "[Rr]esnet*"', 'params.x ~ "[!r]*"',
    'params.x ~ "*\\n*"', 'params.x ~ "a[*]b[?]c[[]d]"', 'params.x ~ "100%_sure\\\\"', 'params.x ~ "caf?"', 'params.x ~ ""',
    'params.x ~ "*5*0"', 'params.x ~ "[a-c]*"', 'params.x ~ "[]]"', 'params.x ~ "[z-a]*"',
    'params.x =~ "net"', 'params.x =~ "^res"', 'params.x =~ "50$"', 'params.x =~ "(?i)RESNET"', 'params.x =~ "\\\\d+"',
    'params.x =~ "^\\\\w+$"', 'params.x =~ "\\\\bv2"', 'params.x =~ "(?m)^v2$"', 'params.x =~ "(?s)50.v2"', 'params.x =~ "50.v2"',
    'params.x =~ "^$"', 'params.x =~ ""', 'params.x =~ "[^\\\\x00-\\\\x7f]"', 'params.x =~ "(?<=caf)é"', 'params.x =~ "a(?!\\\\*)"',
    'params.x =~ "^.{2}$"', 'params.x =~ "\\\\W"', 'params.x =~ "\\\\s"', 'params.x =~ "(?a)^\\\\w+$"', 'params.x =~ "x{0,300}$"',
    'params.x =~ "[a-z]{2,}"',
    # keys a path cannot spell, dotted keys
    'params."q\\"k" >= 10', 'params."q\\"k" = null', 'params."back\\\\slash" ~ "v1*"', 'params."a.b" > 5', 'params."a.b" = 0',
    'params."uni é 😀" = "üü"', 'params."tab\\tkey" = true', 'params.model.arch = "vit-b/16"', 'params.model.arch ~ "*/*"',
    "params.lr < 1e-3", "params.lr <= 1e-3 and params.model.arch =~ \"^[Rr]es\"", "params.lr = null", "not params.lr = null",
    "params.i in [1, 3, 5, 7] or params.i > 30", "not (params.i < 10 or params.i > 20)",
    # summary
    "summary.acc > 0.6", "summary.acc != 0.6", "summary.acc = null", "summary.best = 1", "summary.best = true",
    "summary.best > 1e20", 'summary.best = "x"', "summary.best = null", "summary.missing != 1",
    # metrics
    "metrics.loss.min < 0.1", "metrics.loss.last > 0.05", "metrics.loss.max = 1", "metrics.val/acc.max > 0.3",
    "metrics.val/acc.last = null", "metrics.sys/cpu.min = 10", "metrics.odd.last = null", "metrics.odd.min = null",
    "metrics.odd.max > 2", "metrics.odd.min < -1e300", "metrics.odd.max >= 1e300", "metrics.odd.last != 0",
    "metrics.odd.max = 1180591620717411303424", "metrics.odd.min = -1180591620717411303424", "metrics.odd.last = true",
    "metrics.odd.last = 7", 'metrics.odd.last = "done"', 'metrics.odd.last ~ "*text"', "metrics.odd.min = 1",
    "metrics.odd.last = 9007199254740992", "metrics.odd.max = 9007199254740993", "metrics.odd.last contains 3",
    'metrics.odd.last contains "a"', "metrics.nope.last = null", "metrics.nope.min != 1",
    # run keys
    "status = COMPLETED", "status != COMPLETED", "status = null", "status in [FAILED, CANCELLED]", 'status ~ "C*"',
    'tags = "baseline"', 'tags != "baseline"', 'tags contains "sweep-1"', '"ü" in tags', 'tags in ["sweep-1", "sweep-2"]',
    'tags ~ "sweep*"', 'tags =~ "^a\\\\*"', "tags = null", "tags != null", 'tags ~ "*"', 'not tags ~ "*"',
    'name = "run-03"', 'name ~ "renamed*"', 'name =~ "^run-0[0-4]$"', 'name > "run-30"', 'prefix ~ "proj1/*"',
    'prefix =~ "sweeps/"', 'project = "proj2"', 'project in ["proj0", "empty"]', 'folder = "sweeps"', "folder = null",
    'folder ~ "a/*"', 'description contains "%"', 'description = ""', "description = null", 'description =~ "(?i)RÉSUMÉ"',
    "created > 2027-01-01", "created < 2026-06-01", "created = null", "started >= 2027-01-15T12:00:00Z",
    "started = null", "ended > 2027-01-15", "ended = null", "ended != null and status = COMPLETED",
    "duration < 1s", "duration > 1d", "duration >= 10m and duration < 2h", "duration = null", "duration = 90",
    "duration > 50h", "not duration > 1h",
]


def reference(row: dict, key: _filter.Key) -> object:
    """What the Python evaluator reads: the run as the store gives it back."""
    value = _lookup(row, key)
    return _filter.MISSING if value is None and key.name != "tags" else value


def _lookup(row: dict, key: _filter.Key):
    if key.scope in ("params", "summary"):
        return row[key.scope].get(key.name, _filter.MISSING)
    if key.scope == "metrics":
        stats = row["metrics"].get(key.name)
        return _filter.MISSING if stats is None else stats.get(key.agg, _filter.MISSING)
    meta = row["meta"]
    name = key.name
    if name in ("prefix", "project", "status"):
        return row[name]
    if name == "name":
        return meta.get("name") or row["prefix"].rsplit("/", 1)[-1]
    if name == "tags":
        return list(meta.get("tags") or [])
    if name in ("folder", "description"):
        return meta.get(name)
    if name == "created":
        return meta.get("created_at") if meta.get("created_at") is not None else row["created_at"]
    if name == "started":
        return meta.get("started_at")
    if name == "ended":
        return meta.get("finished_at")
    if name == "duration":  # as mldash._runs.Run.duration, counting up to NOW
        stored = meta.get("duration")
        if meta.get("status") == "RUNNING":
            since = meta.get("resumed_at") or meta.get("started_at")
            if isinstance(since, (int, float)):
                return (stored or 0.0) + max(0.0, NOW - since)
        return stored
    raise AssertionError(key)


def series_stats(data_points: list[dict]) -> dict:
    """A series' last/min/max of its headline field, by mldash._series_stats' rules, from its points."""
    if not data_points:
        return {}
    last = data_points[-1]["data"]
    key = _headline_key(last)
    if key is None:
        return {}
    assert last.get(key) is runfolder_headline({"data": last}) or last.get(key) == runfolder_headline({"data": last})
    numbers = [p["data"][key] for p in data_points if key in p["data"]]
    numbers = [v for v in numbers if v.__class__ in (int, float) and v == v]
    out = {"last": last[key]}
    if numbers:
        low = high = numbers[0]
        for v in numbers[1:]:
            if v < low:
                low = v
            if v > high:
                high = v
        out.update(min=low, max=high)
    return out


def _headline_key(data: dict):
    if "value" in data:
        return "value"
    for key, value in data.items():
        if key not in ("step", "epoch", "timestamp") and isinstance(value, (int, float)):
            return key
    return next(iter(data), None)


def _store_runs(store: Store) -> list[dict]:
    for run in RUNS:
        record = store.upsert_experiment("default", run["prefix"], _tagged({k: v for k, v in run["meta"].items() if v is not None or k == "status"}))
        exp_id = record["id"]
        store.set_document(exp_id, "parameters", _tagged(run["params"]))
        store.set_document(exp_id, "summary", _tagged(run["summary"]))
        batches = [{"name": name, "start_index": 0, "points": _tagged(pts)} for name, pts in run["metrics"].items()]
        store.append_metrics(exp_id, batches)
    rows = []
    with store.reading() as conn:
        for row in conn.execute(select(experiments)).mappings():
            full = store.get_experiment(row["id"])
            metrics = {}
            for name in store.metric_names(row["id"]):
                metrics[name] = series_stats(_codec.untag(store.read_metric(row["id"], name, 0, 100_000)["data"]))
            rows.append({
                "id": row["id"], "prefix": row["prefix"], "project": row["project"], "status": row["status"],
                "created_at": row["created_at"], "meta": _codec.untag(row["meta"]),
                "params": _codec.untag(full["params"]), "summary": _codec.untag(full["summary"]), "metrics": metrics,
            })
    return rows


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "sqlite":
        db = f"sqlite:///{folder}/db.sqlite"
    else:
        db = _linguistic_database(request.getfixturevalue("postgres"))
    store = Store(db, str(folder / "chunks"))
    rows = _store_runs(store)
    yield request.param, store, rows
    store.close()


def _linguistic_database(cluster) -> str:
    """A database whose default collation is not code point order (ICU's root locale,
    where "b" < "R"), so that string order must come from the SQL itself."""
    import psycopg

    name = "t_icu_" + uuid.uuid4().hex[:10]
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        try:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE \'und\' LOCALE \'C.UTF-8\'')
        except psycopg.Error:  # PostgreSQL before 15 or without ICU
            return cluster.create_database()
    return cluster.url.rsplit("/", 1)[0] + "/" + name


def _sql_matches(store: Store, dialect: str, node) -> set[str]:
    with store.reading() as conn:
        return {r[0] for r in conn.execute(select(experiments.c.prefix).where(compile_filter(node, dialect, NOW)))}


def test_the_values_read_back_are_the_ones_stored(world):
    """The reference reads what the store gives back; on both databases that is what was sent
    (PostgreSQL's JSONB keeps a number's value, not its spelling: 1e16 reads back as an int)."""
    dialect, _store, rows = world
    by_prefix = {r["prefix"]: r for r in rows}
    for run in RUNS:
        got = by_prefix[run["prefix"]]["params"]
        for key, value in run["params"].items():
            held = got[key]
            if isinstance(value, float) and value != value:
                assert held != held
            elif dialect == "postgresql" and value == 1e16 and isinstance(value, float):
                assert held == value and held.__class__ is int
            else:
                assert held == value and held.__class__ is value.__class__, (key, value, held)


def test_every_filter_returns_what_the_python_evaluator_returns(world):
    dialect, store, rows = world
    assert len(FILTERS) >= 100
    failures = []
    for text in FILTERS:
        node = _filter.parse(text)
        expected = {r["prefix"] for r in rows if _filter.matches(node, lambda key, r=r: reference(r, key))}
        try:
            got = _sql_matches(store, dialect, node)
        except Exception as error:  # noqa: BLE001 - collect every failure
            failures.append(f"{text!r}: {type(error).__name__}: {str(error)[:300]}")
            continue
        if got != expected:
            failures.append(f"{text!r}: SQL only {sorted(got - expected)}, Python only {sorted(expected - got)}")
    assert not failures, f"{len(failures)} of {len(FILTERS)} filters differ on {dialect}:\n" + "\n".join(failures)


def test_the_filters_split_the_runs(world):
    """The table is a real test: most filters keep some runs and drop others."""
    _dialect, _store, rows = world
    split = 0
    for text in FILTERS:
        node = _filter.parse(text)
        n = sum(_filter.matches(node, lambda key, r=r: reference(r, key)) for r in rows)
        split += 0 < n < len(rows)
    assert split >= 0.8 * len(FILTERS)


def test_negation_is_exact_on_every_filter(world):
    """Two-valued: ``not F`` holds exactly where F does not, NULLs and all."""
    dialect, store, rows = world
    everyone = {r["prefix"] for r in rows}
    for text in FILTERS[::3]:
        node = _filter.parse(text)
        assert _sql_matches(store, dialect, _filter.Not(node)) == everyone - _sql_matches(store, dialect, node), text


def test_the_listing_filters_with_the_total_and_pages(world):
    _dialect, store, rows = world
    text = "params.i >= 5 and params.i < 25"
    page = store.list_experiments(filter=text, limit=7, offset=0)
    assert page["total"] == 20 and len(page["experiments"]) == 7
    seen = []
    for offset in range(0, 20, 7):
        seen += [r["prefix"] for r in store.list_experiments(filter=text, limit=7, offset=offset)["experiments"]]
    assert sorted(seen) == sorted(r["prefix"] for r in rows if 5 <= r["params"].get("i", -1) < 25)
    row = store.list_experiments(filter='prefix = "proj0/run-00"')["experiments"][0]
    assert row["summary"]["acc"] == 0.5 and row["metric_stats"]["loss"]["key"] == "value"
    assert store.list_experiments(filter="", limit=1)["total"] == len(rows)  # no filter: everything


@pytest.mark.parametrize(
    "text",
    ["params.lr <", "status = DONE", "params.lr < 1e-3 and", "(params.lr < 1", "metrics.loss < 1", "params.x =~ \"(\""],
)
def test_a_bad_filter_is_a_400_with_the_caret(world, text):
    _dialect, store, _rows = world
    with pytest.raises(BadFilter) as caught:
        store.list_experiments(filter=text)
    error = caught.value
    assert error.status == 400 and error.code == "bad_filter"
    assert "^" in str(error) and text.split("\n")[0][:20] in str(error)
    assert error.extra["column"] >= 1


def test_keys_with_odd_characters_are_bound_never_spliced(world):
    """A key that would end the SQL string or the JSON path finds nothing and breaks nothing."""
    dialect, store, rows = world
    for key in ["x'; DROP TABLE experiments; --", 'x") OR 1=1 --', "$.x", "x]", "' OR '1'='1", "\\", "%", "_", "x\u2028y"]:
        quoted = key.replace("\\", "\\\\").replace('"', '\\"')
        for text in (f'params."{quoted}" = 1', f'params."{quoted}" != 1', f'metrics."{quoted}".last = null'):
            try:
                node = _filter.parse(text)
            except _filter.FilterError:  # not a series name: the parser refuses it first
                assert text.startswith("metrics.")
                continue
            expected = {r["prefix"] for r in rows if _filter.matches(node, lambda k, r=r: reference(r, k))}
            assert _sql_matches(store, dialect, node) == expected, text
    with store.reading() as conn:
        assert conn.execute(select(experiments.c.id)).all()  # still there


# -- PostgreSQL's regular expressions said as Python's ----------------------------------------
SUBJECTS = [
    "", "a", "abc", "ABC", "resnet50", "ResNet-50\nv2", "line1\nline2\n", "x\n", "\n", "tab\there", "café", "CAFÉ",
    "日本語", "😀 smile", "٣٤٥", "١٢", "x_y", "a.b", "a*b", "[x]", "word boundary", "ſ", "K", "ǅ", "İstanbul",
    "ﬀ", "ß", "ẞ", "Σσς", "a" * 300, "a" * 256 + "b", "100%", "back\\slash", "\u00a0nbsp", "\u2028sep", "\x1f",
    "STRASSE", "straße", "\u2014", "l", "k", "\u212a", "-", "^a", "a-b-c", "\\", "*", "x-",
]
PATTERNS = [
    "a", "^a", "a$", "^$", "", ".", "^.$", "(?s)^.$", "\\d", "\\d+$", "^\\D*$", "\\w+", "^\\w+$", "\\W", "\\s", "\\S+",
    "\\bb", "\\Bo", "(?i)abc", "(?i)café", "(?i)s", "(?i)k", "(?i)[a-z]+$", "(?i)ǆ", "(?i)ß", "(?i)σ", "(?m)^line2$",
    "(?m)2$", "line2\\Z", "\\Aline", "(?a)\\w+$", "(?a)\\d", "[^a-z]", "[\\d\\s]", "[^\\W\\d]", "a{2,5}b", "a{256}",
    "a{250,260}b", "^a{300}$", "(?:ab|cd)+", "(a|b)*c", "x??y", "(?=c)", "(?<=a)b", "(?<!a)b", "(?!a).", "é|😀",
    "\\.", "\\*", "\\[x\\]", "\\\\", "[\\U0001F600-\\U0001F64F]", "[\\u0660-\\u0669]+", "\\x1f", "\\n", "(?x) a b c ",
    "[]a]", "[^]a]", "(?s:.)x", "(?i:A)bc", "\\B", "^\\b", "\\b$", "(?i)[^a]", "[^\\s]", "(?i)STRASSE", "(?i)straße", "$", "\\Z",
    "(?m)$", "a|", "|", "(?:)", "a{0}", "a{,3}$", "a{3,}", "(?i)ǅ", "\\u00e9", "\\N{EM DASH}|\\N{LATIN SMALL LETTER SHARP S}",
    "(?#comment)a", "(?i)[k-l]", "(?i)[^k]", "[\\w-]+$", "(?s)^.*$", "^.*$", "\\d{2,3}", "(?a)\\s", "(?i)\\W",
]
GLOBS = [
    "*", "a*", "*b*", "?", "??", "[ab]*", "[!a]*", "*[0-9]", "*\n*", "caf?", "[]]", "[!]]*", "*.*", "a[*]b", "", "*50*v?",
    "[a-]*", "[-a]*", "[!]", "[\\]*", "*[", "[a-c-e]*", "*a*b*c*", "[z-a]", "**", "*\\*", "x[!-]", "[^a]*",
]


def test_pg_regex_matches_what_python_matches(postgres):
    import psycopg

    failures = []
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        for pattern, glob in [(p, False) for p in PATTERNS] + [(g, True) for g in GLOBS]:
            translated = pg_regex(pattern, glob=glob)
            compiled = re.compile(fnmatch.translate(pattern), re.DOTALL) if glob else re.compile(pattern)
            for subject in SUBJECTS:
                want = bool(compiled.search(subject) if not glob else compiled.match(subject))
                got = conn.execute('SELECT %s::text COLLATE "C" ~ %s', (subject, translated)).fetchone()[0]
                if got != want:
                    failures.append(f"{'glob' if glob else 're'} {pattern!r} on {subject!r}: python {want}, pg {got} ({translated[:120]})")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("pattern", ["(a)\\1", "(?P<x>a)(?P=x)", "(a)?(?(1)b|c)", "(?>a+)b", "a++", "a*+b"])
def test_patterns_postgres_cannot_say_are_refused_clearly(pattern):
    if not hasattr(re, "NOFLAG") and ("+" in pattern[2:] or "(?>" in pattern):
        pytest.skip("atomic groups and possessive repeats are Python 3.11+")
    with pytest.raises(BadFilter, match="cannot run on the server's PostgreSQL"):
        pg_regex(pattern)


def test_the_sql_holds_no_value_of_the_filter(world):
    """Every literal and key is a bound parameter: the statement's text has none of them."""
    dialect, store, _rows = world
    text = 'params."zz-key-zz" = "zz-value-zz" and name =~ "zz-rx-zz" and metrics."zz-metric-zz".min < 123456789'
    clause = compile_filter(_filter.parse(text), dialect, NOW)
    sql = str(select(experiments.c.id).where(clause).compile(store.engine))
    for piece in ("zz-key-zz", "zz-value-zz", "zz-rx-zz", "zz-metric-zz", "123456789"):
        assert piece not in sql, piece


def test_a_running_duration_counts_up_to_now(world):
    dialect, store, rows = world
    running = [r for r in rows if r["status"] == "RUNNING" and isinstance(r["meta"].get("started_at"), (int, float))]
    assert running
    node = _filter.parse("duration > 100d")
    assert _sql_matches(store, dialect, node) == set()
    with store.reading() as conn:
        later = {r[0] for r in conn.execute(select(experiments.c.prefix).where(compile_filter(node, dialect, NOW + 200 * 86400)))}
    assert later == {r["prefix"] for r in running}


def test_long_filters_run(world):
    """Thousands of alternatives (a dashboard selection sent as a filter) neither nest past
    SQLite's 1,000 levels nor build a statement per value."""
    dialect, store, rows = world
    prefixes = sorted(r["prefix"] for r in rows)
    texts = [
        "prefix in [" + ", ".join(f'"{p}"' for p in prefixes[::2] + [f"none/{k}" for k in range(4000)]) + "]",
        " or ".join(f'prefix = "{p}"' for p in prefixes[1::2] + [f"none/{k}" for k in range(1500)]),
        " and ".join(f'prefix != "none/{k}"' for k in range(1500)) + ' and params.i >= 3',
        "params.i in [" + ", ".join(str(k) for k in range(5, 3000, 3)) + "]",
        "params.x in [" + ", ".join(f"{k}.5" for k in range(-1500, 1500)) + "]",
    ]
    for text in texts:
        node = _filter.parse(text)
        expected = {r["prefix"] for r in rows if _filter.matches(node, lambda key, r=r: reference(r, key))}
        started = time.perf_counter()
        assert _sql_matches(store, dialect, node) == expected, text[:80]
        assert time.perf_counter() - started < 20, text[:80]
