"""Core logging overhead, side by side with peer trackers, in one run.

    python benchmarks/bench_core.py            # full run (a few minutes)
    python benchmarks/bench_core.py --quick    # smaller counts, for a smoke check

Each case runs in a fresh interpreter (no shared imports, threads or caches) and
is timed from the first call through the tracker's close/finish, so work left
to background threads is counted. Repeated; the table quotes medians. The
machine is shared and noisy: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

# Each body gets N, a temp dir D, and must print the elapsed seconds as JSON
# {"seconds": s, "points": n, "bytes": on-disk size or null}.
SETUP = """
import json, os, sys, time, random
N = int(sys.argv[1]); D = sys.argv[2]
rng = random.Random(0); values = [rng.random() for _ in range(N)]
def disk(path):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
"""

CASES = {
    "floor: orjson lines, buffered file": ("""
import orjson
t = time.perf_counter()
with open(os.path.join(D, "floor.jsonl"), "wb") as f:
    for i, v in enumerate(values):
        f.write(orjson.dumps({"value": v, "step": i}, option=orjson.OPT_APPEND_NEWLINE))
s = time.perf_counter() - t
print(json.dumps({"seconds": s, "points": N, "bytes": disk(D)}))
""", 1.0),
    "mldash append": ("""
import mldash
exp = mldash.Experiment("bench/append", root=D)
exp.start()  # like wandb.init / mlflow.start_run, outside the timed loop
t = time.perf_counter()
for i, v in enumerate(values):
    exp.metrics("loss").append(value=v, step=i)
exp.finish()
s = time.perf_counter() - t
print(json.dumps({"seconds": s, "points": N, "bytes": disk(os.path.join(D, "bench/append/metrics"))}))
""", 1.0),
    "mldash append_batch (100/batch)": ("""
import mldash
exp = mldash.Experiment("bench/batch", root=D)
exp.start()
batches = [[{"value": values[j], "step": j} for j in range(i, min(i + 100, N))] for i in range(0, N, 100)]
t = time.perf_counter()
for batch in batches:
    exp.metrics("loss").append_batch(batch)
exp.finish()
s = time.perf_counter() - t
print(json.dumps({"seconds": s, "points": N, "bytes": disk(os.path.join(D, "bench/batch/metrics"))}))
""", 1.0),
    "mldash append, names alternating (step / step+epoch)": ("""
import mldash
exp = mldash.Experiment("bench/mixed", root=D)
exp.start()
t = time.perf_counter()
for i, v in enumerate(values):
    if i % 2:
        exp.metrics("loss").append(value=v, step=i)
    else:
        exp.metrics("loss").append(value=v, step=i, epoch=i // 1000)
exp.finish()
s = time.perf_counter() - t
print(json.dumps({"seconds": s, "points": N, "bytes": disk(os.path.join(D, "bench/mixed/metrics"))}))
""", 1.0),
    "Lightning CSVLogger": ("""
from lightning.pytorch.loggers import CSVLogger
logger = CSVLogger(D, name="csv")
t = time.perf_counter()
for i, v in enumerate(values):
    logger.log_metrics({"loss": v}, step=i)
logger.save(); logger.finalize("success")
s = time.perf_counter() - t
print(json.dumps({"seconds": s, "points": N, "bytes": disk(D)}))
""", 1.0),
    "ml-dash 0.11 metrics().log": ("""
import io, contextlib
from ml_dash import Experiment
exp = Experiment(prefix="bench/proj/run", dash_root=D)
with contextlib.redirect_stdout(io.StringIO()):
    exp.run.start()
t = time.perf_counter()
for i, v in enumerate(values):
    exp.metrics("loss").log(value=v, step=i)
with contextlib.redirect_stdout(io.StringIO()):
    exp.run.complete()
s = time.perf_counter() - t
print(json.dumps({"seconds": s, "points": N, "bytes": disk(D)}))
""", 0.5),
    "TensorBoard SummaryWriter": ("""
from torch.utils.tensorboard import SummaryWriter
w = SummaryWriter(D)
t = time.perf_counter()
for i, v in enumerate(values):
    w.add_scalar("loss", v, i)
w.close()
s = time.perf_counter() - t
print(json.dumps({"seconds": s, "points": N, "bytes": disk(D)}))
""", 0.3),
    "DVCLive": ("""
from dvclive import Live
live = Live(D, save_dvc_exp=False, report=None)
t = time.perf_counter()
for i, v in enumerate(values):
    live.step = i
    live.log_metric("loss", v)
live.end()
s = time.perf_counter() - t
print(json.dumps({"seconds": s, "points": N, "bytes": disk(D)}))
""", 0.1),
    "wandb offline": ("""
os.environ["WANDB_MODE"] = "offline"; os.environ["WANDB_SILENT"] = "true"
import wandb
run = wandb.init(dir=D, project="bench", settings=wandb.Settings(console="off"))
t = time.perf_counter()
for i, v in enumerate(values):
    run.log({"loss": v}, step=i)
run.finish()
s = time.perf_counter() - t
print(json.dumps({"seconds": s, "points": N, "bytes": None}))
""", 0.05),
    "MLflow log_metric": ("""
import logging; logging.disable(logging.WARNING)
import mlflow
mlflow.set_tracking_uri("sqlite:///" + os.path.join(D, "mlflow.db"))
run = mlflow.start_run()
t = time.perf_counter()
for i, v in enumerate(values):
    mlflow.log_metric("loss", v, step=i)
mlflow.end_run()
s = time.perf_counter() - t
print(json.dumps({"seconds": s, "points": N, "bytes": None}))
""", 0.02),
}

# The same two cases without the compiled speed-ups, as on a machine with no C compiler.
_PURE = 'os.environ["MLDASH_PURE_PYTHON"] = "1"\n'
CASES = {
    **dict(list(CASES.items())[:4]),
    "mldash append, pure Python (no C compiler)": (_PURE + CASES["mldash append"][0], 1.0),
    "mldash append_batch, pure Python": (_PURE + CASES["mldash append_batch (100/batch)"][0], 1.0),
    **dict(list(CASES.items())[4:]),
}

def run_case(body: str, n: int) -> dict | None:
    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.run(
            [sys.executable, "-c", SETUP + textwrap.dedent(body), str(n), d],
            capture_output=True, text=True, timeout=900,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"},
        )
    if proc.returncode != 0:
        print(f"    failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_import(repeats: int) -> float:
    """Median ms of ``import mldash`` in fresh interpreters, with bytecode cached as
    an installed package has it (PYTHONDONTWRITEBYTECODE would recompile each time)."""
    code = "import time; t = time.perf_counter(); import mldash; print(time.perf_counter() - t)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    run = lambda: float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout)  # noqa: E731
    run()  # writes the .pyc files
    return statistics.median(run() for _ in range(repeats)) * 1000


def bench_read(points: int, repeats: int = 30) -> tuple[float, float]:
    """Median ms of read(limit=100) near the end, for a long and a 10x shorter series."""
    import mldash

    out = []
    with tempfile.TemporaryDirectory() as d:
        for n in (points // 10, points):
            exp = mldash.Experiment(f"bench/read{n}", root=d)
            metric = exp.metrics("loss")
            batch = 100_000
            for start in range(0, n, batch):
                metric.append_batch([{"value": i * 0.001, "step": i} for i in range(start, min(start + batch, n))])
            exp.finish()
            times = []
            for k in range(repeats):
                start = n - 100 - (k * 37) % 5000
                t = time.perf_counter()
                page = metric.read(start, 100)
                times.append(time.perf_counter() - t)
                assert page["data"][0]["index"] == start and page["total"] == n
            out.append(statistics.median(times) * 1000)
    return out[0], out[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", help="substring of the case names to run")
    args = parser.parse_args()
    n = 20_000 if args.quick else 100_000
    rows = []
    for name, (body, share) in CASES.items():
        if args.only and args.only not in name:
            continue
        count = max(1000, int(n * share))
        results = [r for r in (run_case(body, count) for _ in range(args.repeats)) if r]
        if not results:
            rows.append((name, count, None, None))
            continue
        us = statistics.median(r["seconds"] / r["points"] * 1e6 for r in results)
        size = results[0]["bytes"]
        rows.append((name, count, us, size / count if size else None))
        print(f"  {name}: {us:.2f} us/point", file=sys.stderr)
    floor = next((r[2] for r in rows if r[0].startswith("floor") and r[2]), None)
    print(f"\n### Logging {n:,} `{{value, step}}` points, timed through close/finish\n")
    print(f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d')}; median of {args.repeats} runs, each in a fresh process.\n")
    print("| tracker | points | µs per point | × floor | bytes per point on disk |")
    print("|---|---:|---:|---:|---:|")
    for name, count, us, size in rows:
        if us is None:
            print(f"| {name} | {count:,} | failed | | |")
            continue
        ratio = f"{us / floor:.1f}" if floor else "-"
        print(f"| {name} | {count:,} | {us:.2f} | {ratio} | {f'{size:.1f}' if size else '-'} |")
    if not args.only:
        print(f"\n`import mldash`: {bench_import(9 if not args.quick else 3):.1f} ms (median, fresh interpreters)\n")
        long_ms, longer_ms = bench_read(1_000_000 if args.quick else 10_000_000, repeats=30)
        label = "1M" if args.quick else "10M"
        print(f"`read(start_index, limit=100)` near the end: {long_ms:.2f} ms on a series a tenth as long, "
              f"{longer_ms:.2f} ms on a {label}-point series (median of 30)\n")


if __name__ == "__main__":
    main()
