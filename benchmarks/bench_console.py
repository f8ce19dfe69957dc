"""Console capture overhead: 100,000 print() calls with capture on against off,
side by side with wandb's console capture, in one run.

    python benchmarks/bench_console.py              # 100,000 prints, 5 repeats
    python benchmarks/bench_console.py --quick      # 20,000 prints, 3 repeats

Each case runs in a fresh interpreter whose stdout is /dev/null, block-buffered
(as when a job's output goes to a file) and again line-buffered (as on a
terminal; /dev/null makes each line's write nearly free, the worst case for a
ratio). "loop" is the print loop alone, what training feels while it prints;
"loop+stop" runs on to the end of the capture: for mldash ``stop()`` and the
writer's close, every record on disk in console/console.jsonl; for wandb
``run.finish()``, the whole run's shutdown (not the console's alone). wandb
patches ``sys.stdout.write`` on import, so even ``console="off"`` costs; its
cases run a twentieth of the prints, per-print figures compared. Cases are
interleaved across repeats; the table quotes medians. The machine is shared
and noisy: read the ratios.
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
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SETUP = """
import json, os, sys, time
sys.path.insert(0, REPO)
N = int(sys.argv[1]); D = sys.argv[2]
if sys.argv[3] == "line":
    sys.stdout.reconfigure(line_buffering=True)
def loop():
    for i in range(N):
        print("step", i, "loss", 0.25, "lr", 1e-3)
def report(t0, t1, t2):
    sys.__stderr__.write(json.dumps({"loop": t1 - t0, "total": t2 - t0}) + "\\n")
"""

_MLDASH = """
from mldash._console import ConsoleCapture, writer_sink, read_console
from mldash._writer import Writer
w = Writer(D, "bench/console", series=lambda: [], on_error=lambda: None, interval=0.5,
           trigger=40_000, max_pending=800_000)
c = ConsoleCapture({mode!r}, writer_sink(w.extra, D, encoded={encoded})).start()
t0 = time.perf_counter(); loop(); t1 = time.perf_counter()
c.stop(); w.close(); t2 = time.perf_counter()
assert read_console(D, 0, 1)["total"] >= N, read_console(D, 0, 1)["total"]
report(t0, t1, t2)
"""

_WANDB = """
os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
import wandb
run = wandb.init(dir=D, project="bench", settings=wandb.Settings(console={console!r}))
t0 = time.perf_counter(); loop(); t1 = time.perf_counter()
run.finish(); t2 = time.perf_counter()
report(t0, t1, t2)
"""

CASES = {
    "print, no capture": ("t0 = time.perf_counter(); loop(); t1 = time.perf_counter(); sys.stdout.flush(); "
                          "report(t0, t1, time.perf_counter())", None),
    "mldash capture_console=True, a record a line (encoded=False)": (
        _MLDASH.format(mode=True, encoded=False), "print, no capture"),
    "mldash capture_console=True (as a run has it: batches)": (
        _MLDASH.format(mode=True, encoded=True), "print, no capture"),
    'mldash capture_console="fd"': (_MLDASH.format(mode="fd", encoded=True), "print, no capture"),
    'wandb offline, console="off"': (_WANDB.format(console="off"), "print, no capture"),
    'wandb offline, console="wrap"': (_WANDB.format(console="wrap"), "print, no capture"),
}
# wandb's patched write costs ~100x a print: it runs a twentieth of the prints, per-print figures compared.
SCALE = {'wandb offline, console="off"': 0.05, 'wandb offline, console="wrap"': 0.05}


def wandb_available() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("wandb") is not None
    except Exception:
        return False


def run_case(body: str, n: int, buffering: str) -> dict | None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "MLDASH_ROOT")}
    with tempfile.TemporaryDirectory() as d:
        code = f"REPO = {REPO!r}\n" + SETUP + body
        proc = subprocess.run([sys.executable, "-c", code, str(n), d, buffering], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, timeout=600, env=env)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        print(f"    failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("-n", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--no-wandb", action="store_true")
    args = parser.parse_args()
    n = args.n or (20_000 if args.quick else 100_000)
    repeats = args.repeats or (3 if args.quick else 5)
    cases = {k: v for k, v in CASES.items() if "wandb" not in k or (wandb_available() and not args.no_wandb)}
    results: dict = {}
    for buffering in ("block", "line"):
        for r in range(repeats):
            for name, (body, _) in cases.items():
                count = max(1, int(n * SCALE.get(name, 1)))
                got = run_case(body, count, buffering)
                if got is not None:
                    got = {"prints": count, **got}
                    results.setdefault((buffering, name), []).append(got)
                    print(f"  {buffering:5} {r + 1}/{repeats} {name}: {count} prints, "
                          f"total {got['total'] * 1e3:.1f} ms", file=sys.stderr)

    def per_print(runs: list, key: str) -> float:
        return statistics.median(x[key] / x["prints"] for x in runs)

    print(f"\n### {n:,} `print()` calls, console capture on against off\n")
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d')}, load average {os.getloadavg()[0]:.1f} at the end; median of {repeats} "
          "runs, each in a fresh process, stdout on /dev/null; `print(\"step\", i, \"loss\", 0.25, \"lr\", 1e-3)`.\n")
    print("| stdout | case | prints | loop µs/print | loop × | loop+stop µs/print | loop+stop × |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for buffering in ("block", "line"):
        for name, (_, base) in cases.items():
            runs = results.get((buffering, name))
            if not runs:
                print(f"| {buffering}-buffered | {name} | failed | | | | |")
                continue
            loop, total = per_print(runs, "loop"), per_print(runs, "total")
            ratios = ["1.00", "1.00"]
            if base and results.get((buffering, base)):
                base_runs = results[(buffering, base)]
                ratios = [f"{loop / per_print(base_runs, 'loop'):.2f}", f"{total / per_print(base_runs, 'total'):.2f}"]
            print(f"| {buffering}-buffered | {name} | {runs[0]['prints']:,} | {loop * 1e6:.2f} | {ratios[0]} | "
                  f"{total * 1e6:.2f} | {ratios[1]} |")

if __name__ == "__main__":
    main()
