"""Reading many runs and big series, side by side with MLflow (issue 16's performance goals).

    python3 benchmarks/bench_analysis.py [--runs 10000] [--points 10000000] [--data DIR]

1. ``mldash.runs(filter)`` over N local runs (each: 6 parameters, 2 summary values,
   ``train/loss`` of 100 points and ``val/loss`` of 10), and MLflow's ``search_runs``
   over the same runs logged into MLflow's SQLite store, the same filter in each
   one's language. Each is measured in a fresh process (the OS file cache warm: the
   first call of a notebook) and again in that process (warm: the second call).
2. ``exp.metrics(name).to_pandas()`` of a series of ``--points`` {value, step}
   points, in a fresh process: wall time and peak RSS above the process's RSS
   before the call, against the frame's own size; with the compiled line parser
   and without it (MLDASH_PURE_PYTHON=1: Arrow's CSV reader), and beside them
   ``pandas.read_csv`` of the same points as a CSV file with the columns that
   Lightning's CSVLogger writes (step, value), read with its C engine. Each is
   run ``--repeats`` times, interleaved; the medians print.

The runs are written once into ``--data`` (default $TMPDIR/mldash-bench-analysis)
and reused: the mldash ones as their files (what Experiment writes, written
directly, which takes seconds instead of minutes), the MLflow ones through its
client (about 25 ms a run). Results print as a table and go to
benchmarks/results/analysis.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

MLDASH_FILTER = 'metrics.val/loss.last < 0.2 and params.optimizer = "adam" and status = COMPLETED'
MLDASH_FILTER_MIN = "params.lr < 1e-3 and status = COMPLETED and metrics.val/loss.min < 0.2"
MLFLOW_FILTER = "metrics.`val/loss` < 0.2 and params.optimizer = 'adam' and attributes.status = 'FINISHED'"


def _runs_spec(n: int, seed: int = 7):
    rng = random.Random(seed)
    for i in range(n):
        lr = 10 ** rng.uniform(-5, -1)
        final = rng.uniform(0.05, 0.6)
        yield {
            "name": f"run-{i:05d}",
            "params": {"lr": lr, "optimizer": rng.choice(["adam", "sgd"]), "batch_size": rng.choice([32, 64, 128]),
                       "model.arch": rng.choice(["resnet18", "resnet50", "vit"]), "seed": i, "epochs": 10},
            "summary": {"best_acc": rng.uniform(0.5, 0.99), "train_runtime": rng.uniform(10, 1000)},
            "train": [2.0 * math.exp(-s / 30) + rng.uniform(0, 0.05) for s in range(100)],
            "val": [final + (0.5 - final) * (1 - s / 9) for s in range(10)],
            "status": "COMPLETED" if rng.random() < 0.9 else "FAILED",
        }


def prepare_mldash(root: str, n: int) -> None:
    import orjson

    import mldash
    from mldash import _codec

    marker = os.path.join(root, f".ready-{n}")
    if os.path.exists(marker):
        return
    # One real run gives experiment.json's shape; the others follow it.
    template_exp = mldash.Experiment("template/run", root=os.path.join(root, ".template"), system_metrics=False,
                                     capture_console=False)
    with template_exp:
        pass
    template = _codec.loads(open(os.path.join(template_exp.path, "experiment.json"), "rb").read())
    now = time.time() - 86400
    for i, spec in enumerate(_runs_spec(n)):
        path = os.path.join(root, "bench", spec["name"])
        os.makedirs(os.path.join(path, "parameters"), exist_ok=True)
        start = now + i
        meta = dict(template, id=uuid.uuid4().hex, project="bench", folder=None, name=spec["name"],
                    prefix=f"bench/{spec['name']}", created_at=start, started_at=start, updated_at=start + 60,
                    finished_at=start + 60, duration=60.0, status=spec["status"], tags=[], sessions=1)
        with open(os.path.join(path, "experiment.json"), "wb") as f:
            f.write(orjson.dumps(meta))
        with open(os.path.join(path, "parameters", "parameters.json"), "wb") as f:
            f.write(orjson.dumps(spec["params"]))
        with open(os.path.join(path, "summary.json"), "wb") as f:
            f.write(orjson.dumps(spec["summary"]))
        ms = int(start * 1000)
        for name, values in (("train/loss", spec["train"]), ("val/loss", spec["val"])):
            folder = os.path.join(path, "metrics", *name.split("/"))
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, "data.jsonl"), "wb") as f:
                f.write(b"".join(orjson.dumps([ms + s, {"value": v, "step": s}]) + b"\n" for s, v in enumerate(values)))
    open(marker, "w").close()


def prepare_mlflow(folder: str, n: int) -> str:
    import logging

    logging.disable(logging.WARNING)
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    os.makedirs(folder, exist_ok=True)
    uri = "sqlite:///" + os.path.join(folder, "mlflow.db")
    marker = os.path.join(folder, f".ready-{n}")
    if os.path.exists(marker):
        return uri
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("bench")
    eid = experiment.experiment_id if experiment else client.create_experiment("bench")
    done = {r.info.run_name for r in client.search_runs([eid], max_results=50000)} if experiment else set()
    now = time.time() - 86400
    for i, spec in enumerate(_runs_spec(n)):
        if spec["name"] in done:
            continue
        start = int((now + i) * 1000)
        run = client.create_run(eid, start_time=start, run_name=spec["name"])
        metrics = [Metric("train/loss", v, start + s, s) for s, v in enumerate(spec["train"])]
        metrics += [Metric("val/loss", v, start + s, s) for s, v in enumerate(spec["val"])]
        metrics += [Metric(k, v, start, 0) for k, v in spec["summary"].items()]  # MLflow has no summary
        client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in spec["params"].items()])
        client.set_terminated(run.info.run_id, "FINISHED" if spec["status"] == "COMPLETED" else "FAILED",
                              end_time=start + 60_000)
    open(marker, "w").close()
    return uri


def _in_fresh_process(code: str, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True,
                         env={**os.environ, "PYTHONPATH": REPO, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


MLDASH_CODE = """
import json, time, mldash, lark, pandas, pyarrow  # imported before the clock, as mlflow imports pandas
root, filt = {root!r}, {filt!r}
t = time.perf_counter(); found = mldash.runs(filt, root=root); first = time.perf_counter() - t
t = time.perf_counter(); again = mldash.runs(filt, root=root); second = time.perf_counter() - t
t = time.perf_counter(); frame = mldash.runs(root=root).to_pandas(); table_first = time.perf_counter() - t
t = time.perf_counter(); frame = mldash.runs(root=root).to_pandas(); table_second = time.perf_counter() - t
print(json.dumps(dict(matched=len(found), first=first, second=second, table_first=table_first,
                      table_second=table_second, table_shape=list(frame.shape))))
"""

MLFLOW_CODE = """
import json, logging, time
logging.disable(logging.WARNING)
import mlflow
mlflow.set_tracking_uri({uri!r})
eid = mlflow.get_experiment_by_name("bench").experiment_id
t = time.perf_counter(); found = mlflow.search_runs([eid], {filt!r}, max_results=100000); first = time.perf_counter() - t
t = time.perf_counter(); found = mlflow.search_runs([eid], {filt!r}, max_results=100000); second = time.perf_counter() - t
t = time.perf_counter(); frame = mlflow.search_runs([eid], max_results=100000); table_first = time.perf_counter() - t
t = time.perf_counter(); frame = mlflow.search_runs([eid], max_results=100000); table_second = time.perf_counter() - t
print(json.dumps(dict(matched=len(found), first=first, second=second, table_first=table_first,
                      table_second=table_second, table_shape=list(frame.shape))))
"""

SERIES_CODE = """
import json, resource, time, mldash, pandas, pyarrow, pyarrow.csv, pyarrow.compute, numpy
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
exp = mldash.Experiment("series/big", root={root!r}, system_metrics=False, capture_console=False)
before = rss()
t = time.perf_counter(); frame = exp.metrics("train/loss").to_pandas(); took = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
size = int(frame.memory_usage(deep=True, index=True).sum())
print(json.dumps(dict(points=len(frame), seconds=took, frame_bytes=size, peak_above_before=peak - before,
                      ratio=(peak - before) / size, dtypes={{k: str(v) for k, v in frame.dtypes.items()}})))
"""


CSV_CODE = """
import json, resource, time, pandas, pyarrow, numpy
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
before = rss()
t = time.perf_counter(); frame = pandas.read_csv({path!r}); took = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
size = int(frame.memory_usage(deep=True, index=True).sum())
print(json.dumps(dict(points=len(frame), seconds=took, frame_bytes=size, peak_above_before=peak - before,
                      ratio=(peak - before) / size)))
"""


def prepare_csv(path: str, points: int) -> None:
    """The same points as Lightning's CSVLogger would write them (repr of each float)."""
    if os.path.exists(path):
        return
    with open(path + ".part", "w") as f:
        f.write("step,value\n")
        for start in range(0, points, 100_000):
            f.write("".join(f"{i},{1.0 / (i + 1)!r}\n" for i in range(start, min(points, start + 100_000))))
    os.replace(path + ".part", path)


def prepare_series(root: str, points: int) -> None:
    import mldash

    marker = os.path.join(root, f".ready-{points}")
    if os.path.exists(marker):
        return
    exp = mldash.Experiment("series/big", root=root, system_metrics=False, capture_console=False)
    metric = exp.metrics("train/loss")
    with exp:
        for start in range(0, points, 100_000):
            metric.append_batch([{"value": 1.0 / (i + 1), "step": i} for i in range(start, min(points, start + 100_000))])
    open(marker, "w").close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "mldash-bench-analysis"))
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--only", choices=["all", "runs", "series"], default="all")
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per series reader")
    args = parser.parse_args()
    runs_root = os.path.join(args.data, f"mldash-{args.runs}")
    series_root = os.path.join(args.data, f"series-{args.points}")
    results = {"runs": args.runs, "points": args.points, "cpus": os.cpu_count(), "load": os.getloadavg()}
    if args.only in ("all", "runs"):
        t = time.time()
        prepare_mldash(runs_root, args.runs)
        print(f"mldash runs ready ({time.time() - t:.1f} s)", flush=True)
        uri = None
        if not args.skip_mlflow:
            t = time.time()
            uri = prepare_mlflow(os.path.join(args.data, f"mlflow-{args.runs}"), args.runs)
            print(f"MLflow runs ready ({time.time() - t:.1f} s)", flush=True)
        results["mldash"] = _in_fresh_process(MLDASH_CODE.format(root=runs_root, filt=MLDASH_FILTER))
        results["mldash_min"] = _in_fresh_process(MLDASH_CODE.format(root=runs_root, filt=MLDASH_FILTER_MIN))
        if uri:
            results["mlflow"] = _in_fresh_process(MLFLOW_CODE.format(uri=uri, filt=MLFLOW_FILTER))
        print(f"\n{args.runs:,} runs; filter: {MLDASH_FILTER}")
        print(f"{'':34} {'matched':>8} {'1st call':>9} {'2nd call':>9} {'table 1st':>10} {'table 2nd':>10}")
        rows = [("mldash.runs", results["mldash"]), ("mldash.runs (metrics .min filter)", results["mldash_min"])]
        if uri:
            rows.append(("mlflow.search_runs (SQLite)", results["mlflow"]))
        for label, r in rows:
            print(f"{label:34} {r['matched']:>8} {r['first']:>8.2f}s {r['second']:>8.2f}s "
                  f"{r['table_first']:>9.2f}s {r['table_second']:>9.2f}s")
    if args.only in ("all", "series"):
        t = time.time()
        prepare_series(series_root, args.points)
        csv_path = os.path.join(args.data, f"series-{args.points}.csv")
        prepare_csv(csv_path, args.points)
        print(f"series ready ({time.time() - t:.1f} s)", flush=True)
        readers = {
            "mldash to_pandas (compiled parser)": (SERIES_CODE.format(root=series_root), {}),
            "mldash to_pandas (no compiler: Arrow CSV)": (SERIES_CODE.format(root=series_root),
                                                          {"MLDASH_PURE_PYTHON": "1"}),
            "pandas.read_csv of CSVLogger's columns": (CSV_CODE.format(path=csv_path), {}),
        }
        runs: dict[str, list] = {label: [] for label in readers}
        for _ in range(args.repeats):
            for label, (code, env) in readers.items():
                runs[label].append(_in_fresh_process(code, env))
        results["series"] = {label: _medians(found) for label, found in runs.items()}
        print(f"\n{args.points:,} points, median of {args.repeats} fresh processes (load {os.getloadavg()[0]:.1f}):")
        for label, s in results["series"].items():
            print(f"  {label:44} {s['seconds']:6.2f} s (min {s['seconds_min']:.2f}, max {s['seconds_max']:.2f}), "
                  f"frame {s['frame_bytes'] / 2**20:.0f} MiB, peak RSS {s['ratio']:.2f}x the frame")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", "analysis.json")
    if args.only != "all" and os.path.exists(path):  # keep the other part's last results
        with open(path) as f:
            results = {**json.load(f), **results}
    with open(path, "w") as f:
        json.dump(results, f, indent=2)


def _medians(found: list[dict]) -> dict:
    seconds = sorted(r["seconds"] for r in found)
    return {**found[0], "seconds": statistics.median(seconds), "seconds_min": seconds[0], "seconds_max": seconds[-1],
            "ratio": statistics.median(r["ratio"] for r in found)}


if __name__ == "__main__":
    main()
