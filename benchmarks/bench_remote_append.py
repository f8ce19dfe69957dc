"""What ``remote=`` costs the training loop: local vs remote appends, side by side.

    python benchmarks/bench_remote_append.py            # full run (about two minutes)
    python benchmarks/bench_remote_append.py --quick    # smaller counts, a smoke check

Three modes, same code, each case in a fresh interpreter:
- local:        ``Experiment(root=D)``
- remote:       ``Experiment(root=D, remote=URL)`` with a live ``mldash server``
                (embedded store) on this machine, so the uploader is busy for the
                whole loop: reading the files, gzip, HTTP, all in the same process;
- remote, down: ``remote=`` pointing at a port nobody listens on (the uploader
                keeps failing and backing off).

Two loops: bare ``append`` calls (the worst case: nothing else for the uploader
thread to hide behind) and a tiny PyTorch training loop (an MLP step plus three
metric appends a step). "loop" is the time of the loop itself: what training
pays. "finish" is ``finish()``: local flush, plus, with a live server, waiting
until the server has everything (a run's tail, once). Repeated, interleaved;
the table quotes medians. The machine is small and shared: read the ratios.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))

CASE = r"""
import io, json, os, sys, time, contextlib
mode, loop, n, root, url = sys.argv[1:6]
n = int(n)
os.environ["MLDASH_SYNC_TIMEOUT"] = "120" if mode == "remote" else "0"
import mldash
if loop == "torch":
    import torch
    torch.manual_seed(0); torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(64, 32), torch.randn(64, 1)
exp = mldash.Experiment(f"bench/{mode}-{loop}", root=root, remote=url if mode != "local" else None)
exp.start()
exp.params.set(mode=mode, loop=loop, n=n)
# Time the steady state: the uploader's one-off start (importing requests, the
# first connection) is over before the loop starts; it is reported separately.
ts = time.perf_counter()
up = exp._uploader
while up is not None and not (up.caught_up or up.error is not None) and time.perf_counter() - ts < 30:
    time.sleep(0.01)
startup = time.perf_counter() - ts
t0 = time.perf_counter(); c0 = time.thread_time()
if loop == "append":
    m = exp.metrics("loss")
    for i in range(n):
        m.append(value=i * 0.5, step=i)
    points = n
else:
    for step in range(n):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
        exp.metrics("train/loss").append(value=loss.detach(), step=step)
        exp.metrics("train/lr").append(value=0.01, step=step)
        exp.metrics("train/grad_norm").append(value=1.0, step=step)
    points = 3 * n
t1 = time.perf_counter(); c1 = time.thread_time()
with contextlib.redirect_stderr(io.StringIO()):  # the "not uploaded" notice of the down mode
    exp.finish()
t2 = time.perf_counter()
print(json.dumps({"loop": t1 - t0, "cpu": c1 - c0, "finish": t2 - t1, "points": points, "startup": startup}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu: int) -> list[str]:
    """On a machine with 2+ cores, give the server and the training process a core each,
    so that "remote" measures the client's own cost, not two processes fighting for a core
    (in production the server runs elsewhere)."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(cpu)]
    return []


def start_server(data: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [*pinned(1), sys.executable, "-m", "mldash", "server", "--port", str(port), "--data", data, "--no-ui"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/api/v1/health", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("mldash server did not start")


def server_points(url: str, prefix: str) -> int:
    query = f"namespace=default&prefix={prefix}"
    with urllib.request.urlopen(f"{url}/api/v1/experiments/lookup?{query}", timeout=10) as r:
        exp_id = json.loads(r.read())["id"]
    with urllib.request.urlopen(f"{url}/api/v1/experiments/{exp_id}/progress", timeout=10) as r:
        return sum(json.loads(r.read())["metrics"].values())


def run_case(mode: str, loop: str, n: int, url: str) -> dict:
    root = tempfile.mkdtemp(prefix="mldash-bench-")
    try:
        out = subprocess.run(
            [*pinned(0), sys.executable, "-c", CASE, mode, loop, str(n), root, url],
            capture_output=True, text=True, timeout=600, check=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if mode == "remote":
            result["server_points"] = server_points(url, f"bench/{mode}-{loop}")
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "remote.md"))
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 5)
    loops = {"append": 50_000 if args.quick else 300_000, "torch": 500 if args.quick else 3000}

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    data = tempfile.mkdtemp(prefix="mldash-bench-server-")
    server, live_url = start_server(data)
    down_url = f"http://127.0.0.1:{free_port()}"
    results: dict[tuple[str, str], list[dict]] = {}
    try:
        for _ in range(repeats):
            for loop, n in loops.items():
                for mode in ("local", "remote", "remote, down"):
                    url = {"remote": live_url, "remote, down": down_url}.get(mode, "")
                    case = {"local": "local", "remote": "remote", "remote, down": "down"}[mode]
                    results.setdefault((loop, mode), []).append(run_case(case, loop, n, url))
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(data, ignore_errors=True)

    lines = [
        "## Remote writer: what `remote=` costs the training loop",
        "",
        f"{_dt.date.today().isoformat()}, {platform.machine()} {os.cpu_count()}-core VM, Python "
        f"{platform.python_version()}; `python benchmarks/bench_remote_append.py"
        f"{' --quick' if args.quick else ''}`; median of {repeats} interleaved runs, each in a fresh "
        "interpreter; the server (embedded store) runs on this machine, pinned to one core and the training "
        f"process to the other (taskset). Load average before the run: {load}.",
        "",
        "| loop | mode | points | loop time (median) | per point | vs local | loop CPU, main thread | vs local | finish() | uploader start | on server |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for loop, n in loops.items():
        base = statistics.median(r["loop"] for r in results[(loop, "local")])
        base_cpu = statistics.median(r["cpu"] for r in results[(loop, "local")])
        for mode in ("local", "remote", "remote, down"):
            rows = results[(loop, mode)]
            loop_s = statistics.median(r["loop"] for r in rows)
            finish_s = statistics.median(r["finish"] for r in rows)
            cpu_s = statistics.median(r["cpu"] for r in rows)
            points = rows[0]["points"]
            held = "-"
            start_s = "-" if mode == "local" else f"{statistics.median(r['startup'] for r in rows):.2f} s"
            if mode == "remote":
                complete = sum(r["server_points"] == r["points"] for r in rows)
                held = f"{complete}/{len(rows)} complete"
            label = "bare append() calls" if loop == "append" else "tiny PyTorch MLP step + 3 appends"
            lines.append(
                f"| {label} | {mode} | {points:,} | {loop_s:.3f} s | {loop_s / points * 1e6:.2f} µs "
                f"| {loop_s / base:.2f}x | {cpu_s:.3f} s | {cpu_s / base_cpu:.2f}x | {finish_s:.2f} s | {start_s} | {held} |"
            )
    lines += [
        "",
        "Loop time is what training pays, timed once the uploader has started (its one-off start:",
        "importing requests on its own thread and the first connection, is the 'uploader start' column).",
        "'Loop CPU, main thread' is the CPU time the training thread itself spent (time.thread_time):",
        "what the append calls cost it, unaffected by other processes; the wall-clock loop time also",
        "includes waiting for the GIL held by the writer/uploader threads and for a busy machine.",
        "With a live server, finish() includes waiting until the",
        "server holds every point (the uploader works during the loop, so only the tail is left);",
        "with the server down it returns at once here because MLDASH_SYNC_TIMEOUT=0 in this",
        "benchmark (default 10 s) and prints the `mldash sync` command instead.",
        "",
    ]
    table = "\n".join(lines)
    print(table)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(table)


if __name__ == "__main__":
    main()
