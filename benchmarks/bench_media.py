"""Logging an image every step: what it costs the training loop, side by side with
TensorBoard's ``add_image`` and ``wandb.Image``, in one run.

    python benchmarks/bench_media.py                 # 256x256 RGB, 400 steps, 3 repeats
    python benchmarks/bench_media.py --quick         # 100 steps, 2 repeats
    python benchmarks/bench_media.py --step-ms 10    # each step first trains for 10 ms

Each case runs in a fresh interpreter. Every step first copies the next of 16
frames into one reused uint8 HWC buffer and stamps the step into two pixels, so
no two steps log the same image (as a loop reusing its output buffer does;
untimed), then logs it; the frames are smooth gradients with mild noise, closer
to real images than pure noise for PNG. The floor is what any snapshot costs: a
plain numpy copy of the frame, kept (as a queued snapshot is). With ``--step-ms`` each step first
does that many milliseconds of "training" (numpy matrix products on one thread,
which release the GIL as torch's kernels do); without, the loop logs back to
back, the worst case for mldash, whose writer then falls behind and every
snapshot lands in fresh memory. Figures per case:

- "caller": the median (and p90, mean) time of the logging call itself, what training waits for
  (for mldash ``append(image=mldash.Image(x), step=i)``; for TensorBoard
  ``add_image``; for wandb ``run.log({"samples": wandb.Image(x)})``, since
  wandb encodes the PNG inside ``wandb.Image``);
- "all in": from the first call through close/finish, divided by the steps: it
  counts the PNG encoding on mldash's writer thread and the trackers' flushing.

Plus one histogram case each (10,000 float32 values, 64 bins): mldash.Histogram,
TensorBoard ``add_histogram``, ``wandb.Histogram``. Cases are interleaved across
repeats; the table quotes medians. The machine is shared and noisy: read the
ratios.
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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SETUP = """
import json, os, sys, time
sys.path.insert(0, REPO)
import numpy as np
N = int(sys.argv[1]); D = sys.argv[2]; SIDE = int(sys.argv[3])
rng = np.random.default_rng(0)
yy, xx = np.mgrid[0:SIDE, 0:SIDE]
FRAMES = []
for k in range(16):
    base = np.stack([(xx + 8 * k) % 256, (yy + 4 * k) % 256, ((xx + yy) // 2 + 16 * k) % 256], -1)
    FRAMES.append((base + rng.integers(0, 12, base.shape)).clip(0, 255).astype(np.uint8))
buffer = np.empty_like(FRAMES[0])
def frame(i):
    buffer[:] = FRAMES[i % 16]
    buffer[0, 0, 0], buffer[0, 1, 0] = i % 256, i // 256 % 256
VALUES = [rng.standard_normal(10_000).astype(np.float32) * (1 + k / 16) for k in range(16)]
calls = []
STEP = float(sys.argv[4]) / 1000
_a = rng.standard_normal((96, 96))
def train():
    end = time.perf_counter() + STEP
    while time.perf_counter() < end:
        _a @ _a
def disk(path):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
def report(total, path=None):
    mean = sum(calls) / len(calls)
    calls.sort()
    print(json.dumps({"call": calls[len(calls) // 2], "p90": calls[int(len(calls) * 0.9)], "mean": mean,
                      "total": total / N, "bytes": disk(path or D) / N}))
"""

_MLDASH_IMAGE = """
import mldash
exp = mldash.Experiment("bench/media", root=D, system_metrics=False, capture_console=False).start()
m = exp.metrics("samples")
t0 = time.perf_counter()
for i in range(N):
    frame(i); train()
    t = time.perf_counter()
    m.append(image=mldash.Image({make}), step=i)
    calls.append(time.perf_counter() - t)
exp.finish()
total = time.perf_counter() - t0
assert len(m) == N
report(total, exp.path)
"""

CASES = {
    "floor: numpy copy of the frame, kept": """
kept = []
t0 = time.perf_counter()
for i in range(N):
    frame(i); train()
    t = time.perf_counter()
    kept.append(buffer.copy())
    calls.append(time.perf_counter() - t)
report(time.perf_counter() - t0)
""",
    "mldash.Image, numpy HWC uint8": _MLDASH_IMAGE.format(make="buffer"),
    "mldash.Image, torch CHW float32 (CPU)": (
        "import torch\n" + _MLDASH_IMAGE.replace(
            "frame(i); train()", "frame(i); x = torch.from_numpy(buffer).permute(2, 0, 1).float().contiguous() / 255; train()")
    ).format(make="x"),
    "mldash.Image, PIL image": (
        "from PIL import Image as P\n" + _MLDASH_IMAGE.replace("frame(i); train()", "frame(i); x = P.fromarray(buffer); train()")
    ).format(make="x"),
    "TensorBoard add_image": """
from torch.utils.tensorboard import SummaryWriter
w = SummaryWriter(D)
t0 = time.perf_counter()
for i in range(N):
    frame(i); train()
    t = time.perf_counter()
    w.add_image("samples", buffer, i, dataformats="HWC")
    calls.append(time.perf_counter() - t)
w.close()
report(time.perf_counter() - t0)
""",
    "wandb.Image + run.log (offline)": """
os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
import wandb
run = wandb.init(dir=D, project="bench", settings=wandb.Settings(console="off", _disable_stats=True))
t0 = time.perf_counter()
for i in range(N):
    frame(i); train()
    t = time.perf_counter()
    run.log({"samples": wandb.Image(buffer)}, step=i)
    calls.append(time.perf_counter() - t)
run.finish()
report(time.perf_counter() - t0)
""",
    "mldash.Histogram (10,000 values, 64 bins)": """
import mldash
exp = mldash.Experiment("bench/hist", root=D, system_metrics=False, capture_console=False).start()
m = exp.metrics("weights")
t0 = time.perf_counter()
for i in range(N):
    train()
    t = time.perf_counter()
    m.append(w=mldash.Histogram(VALUES[i % 16], bins=64), step=i)
    calls.append(time.perf_counter() - t)
exp.finish()
report(time.perf_counter() - t0, exp.path)
""",
    "TensorBoard add_histogram": """
from torch.utils.tensorboard import SummaryWriter
w = SummaryWriter(D)
t0 = time.perf_counter()
for i in range(N):
    train()
    t = time.perf_counter()
    w.add_histogram("weights", VALUES[i % 16], i, bins=64)
    calls.append(time.perf_counter() - t)
w.close()
report(time.perf_counter() - t0)
""",
    "wandb.Histogram + run.log (offline)": """
os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
import wandb
run = wandb.init(dir=D, project="bench", settings=wandb.Settings(console="off", _disable_stats=True))
t0 = time.perf_counter()
for i in range(N):
    train()
    t = time.perf_counter()
    run.log({"weights": wandb.Histogram(VALUES[i % 16], num_bins=64)}, step=i)
    calls.append(time.perf_counter() - t)
run.finish()
report(time.perf_counter() - t0)
""",
}


def run_case(body: str, n: int, side: int, step_ms: float) -> dict | None:
    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.run(
            [sys.executable, "-c", SETUP.replace("REPO", repr(REPO)) + textwrap.dedent(body), str(n), d, str(side),
             str(step_ms)],
            capture_output=True, text=True, timeout=900,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore",
                 "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        )
    if proc.returncode != 0:
        print(f"    failed: {proc.stderr.strip().splitlines()[-3:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--side", type=int, default=256, help="image width and height")
    parser.add_argument("--step-ms", type=float, default=0.0, help="milliseconds of training before each log")
    parser.add_argument("--only", help="substring of the case names to run")
    args = parser.parse_args()
    steps = args.steps or (100 if args.quick else 400)
    repeats = args.repeats or (2 if args.quick else 3)
    names = [name for name in CASES if not args.only or args.only in name]
    results: dict[str, list[dict]] = {name: [] for name in names}
    for _ in range(repeats):  # interleaved: a noisy minute hits every case alike
        for name in names:
            result = run_case(CASES[name], steps, args.side, args.step_ms)
            if result:
                results[name].append(result)
                print(f"  {name}: {result['call'] * 1e6:.1f} µs a call, {result['total'] * 1e6:.0f} µs all in",
                      file=sys.stderr)
    pace = f", each after {args.step_ms:g} ms of training" if args.step_ms else ", back to back"
    print(f"\n### Logging a {args.side}x{args.side} RGB image (or a histogram) every step, {steps} steps{pace}\n")
    print(f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d')}; median of {repeats} runs, each in a fresh process.\n")
    print("| case | caller: µs a call (median) | p90 | mean | all in through finish: µs a step | bytes a step on disk |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        rows = results[name]
        if not rows:
            print(f"| {name} | failed | | | | |")
            continue
        med = {k: statistics.median(r[k] for r in rows) for k in ("call", "p90", "mean", "total", "bytes")}
        print(f"| {name} | {med['call'] * 1e6:,.1f} | {med['p90'] * 1e6:,.1f} | {med['mean'] * 1e6:,.1f} | "
              f"{med['total'] * 1e6:,.0f} | {med['bytes']:,.0f} |")


if __name__ == "__main__":
    main()
