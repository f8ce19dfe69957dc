"""Team server benchmarks: ingest throughput (vs an MLflow tracking server's
log_batch), read latency deep in a mostly-cold series, and server memory.

    python benchmarks/bench_server.py                 # everything, default sizes
    python benchmarks/bench_server.py --ingest-points 2000000 --read-points 10000000
    git archive OLD mldash | tar -x -C /tmp/old && python benchmarks/bench_server.py --baseline-src /tmp/old

Starts its own servers (embedded SQLite; PostgreSQL + moto S3 from the test
support module; `mlflow server`), prints a table, writes benchmarks/results/server.md.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from _server_support import AWS_ENV, PG_USER, free_port, start_moto, start_postgres, start_server, wait_for_port  # noqa: E402

os.environ.update(AWS_ENV)
BATCH = 1000
T0 = 1_700_000_000_000


def batch_body(start: int, names=("train/loss",)) -> bytes:
    series = [
        {"name": n, "start_index": start, "points": [[T0 + i, {"value": 1.0 / (i + 1), "step": i, "epoch": i // 10_000}] for i in range(start, start + BATCH)]}
        for n in names
    ]
    return gzip.compress(orjson.dumps({"series": series}), 1)


class RSSSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.samples: list[int] = []
        self.running = True

    def run(self) -> None:
        while self.running:
            try:
                self.samples.append(self.proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.2)


def _cpu(procs: list) -> float:
    """CPU seconds (user + system) used so far by these psutil processes."""
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def helper_processes(user: str | None = None, pids: tuple = ()) -> list:
    """The processes that serve a benchmark besides the server: PostgreSQL's (by user), moto's."""
    procs = [psutil.Process(pid) for pid in pids]
    if user:
        procs += [p for p in psutil.process_iter(["username"]) if p.info["username"] == user]
    return procs


def bench_ingest(url: str, points: int, pid: int, helpers: list = ()) -> dict:
    """One client, batches of 1,000 points of one series, sent back to back (keep-alive, gzip).

    Besides the rate it reports CPU milliseconds per batch of the client, the
    server process and its helpers (PostgreSQL, moto): on a shared machine the
    wall-clock rate swings with the load, the CPU cost per batch much less.
    """
    client = httpx.Client(base_url=url + "/api/v1", timeout=60)
    exp_id = client.post("/experiments", json={"prefix": f"bench/ingest-{time.time_ns()}"}).json()["id"]
    # Encode ahead: this measures the server, the uploader's own cost is benchmarked elsewhere.
    bodies = [batch_body(s) for s in range(0, points, BATCH)]
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    server = psutil.Process(pid)
    sampler = RSSSampler(pid)
    sampler.start()
    rss_start = server.memory_info().rss
    cpu_server, cpu_helpers, cpu_client = _cpu([server]), _cpu(helpers), time.process_time()
    started = time.perf_counter()
    for body in bodies:
        response = client.post(f"/experiments/{exp_id}/metrics", content=body, headers=headers)
        response.raise_for_status()
    elapsed = time.perf_counter() - started
    n = len(bodies)
    cpu_client = (time.process_time() - cpu_client) / n * 1000
    cpu_server = (_cpu([server]) - cpu_server) / n * 1000
    cpu_helpers = (_cpu(helpers) - cpu_helpers) / n * 1000
    sampler.running = False
    sampler.join()
    assert response.json()["counts"]["train/loss"] == points
    return {
        "points_per_s": points / elapsed,
        "cpu_ms": {"client": cpu_client, "server": cpu_server, "db+s3": cpu_helpers},
        "rss_start_mb": rss_start / 2**20,
        "rss_peak_mb": max(sampler.samples or [rss_start]) / 2**20,
        "rss_end_mb": server.memory_info().rss / 2**20,
    }


def bench_mlflow(points: int) -> float | None:
    """MLflow tracking server, SQLite backend, MlflowClient.log_batch of 1,000 metrics."""
    try:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient
    except ImportError:
        return None
    folder = Path(tempfile.mkdtemp(prefix="bench-mlflow-"))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{folder}/mlflow.db", "--default-artifact-root", str(folder / "art"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 120, proc)
        client = MlflowClient(f"http://127.0.0.1:{port}")
        for _ in range(100):
            try:
                exp = client.create_experiment(f"bench-{time.time_ns()}")
                break
            except Exception:
                time.sleep(0.5)
        run = client.create_run(exp).info.run_id
        batches = [[Metric("train_loss", 1.0 / (i + 1), T0 + i, i) for i in range(s, s + BATCH)] for s in range(0, points, BATCH)]
        started = time.perf_counter()
        for metrics in batches:
            client.log_batch(run, metrics=metrics)
        return points / (time.perf_counter() - started)
    finally:
        proc.terminate()
        proc.wait(30)


def bulk_load(store_args: dict, points: int) -> int:
    """Fill one series with ``points`` points through the Store (same code path as the API, no HTTP)."""
    from mldash.server.storage import Store

    store = Store(store_args["db"], store_args["blob"], s3_endpoint=store_args.get("s3_endpoint"))
    exp_id = store.upsert_experiment("default", "bench/deep", {})["id"]
    step = 50_000
    for start in range(0, points, step):
        pts = [[T0 + i, {"value": 1.0 / (i + 1), "step": i}] for i in range(start, min(start + step, points))]
        store.append_metrics(exp_id, [{"name": "train/loss", "start_index": start, "points": pts}])
    store.close()
    return exp_id


def bench_reads(url: str, exp_id: int, points: int, samples: int = 200) -> dict:
    import random

    rng = random.Random(0)
    client = httpx.Client(base_url=url + "/api/v1", timeout=60)
    path = f"/experiments/{exp_id}/metrics/read"
    for _ in range(5):  # warm the connection
        client.get(path, params={"name": "train/loss", "start_index": 0, "limit": 1000})
    times = []
    for _ in range(samples):
        start = rng.randrange(0, points - 1000)
        t = time.perf_counter()
        got = client.get(path, params={"name": "train/loss", "start_index": start, "limit": 1000}).json()
        times.append(time.perf_counter() - t)
        assert got["data"][0]["index"] == start and len(got["data"]) == 1000
    times.sort()
    return {"median_ms": statistics.median(times) * 1000, "p95_ms": times[int(0.95 * len(times))] * 1000}


def ingest_rows(label: str, servers: dict, points: int, repeat: int, helpers: list = ()) -> list[tuple]:
    """Ingest ``repeat`` times into each server (alternating, so load drifts hit all
    alike) and return one table row per server with the median rate."""
    runs: dict[str, list] = {name: [] for name in servers}
    for server in servers.values():  # warm up: connections, caches, a fresh cluster's first WAL segments
        bench_ingest(server.url, min(points, 100_000), server.proc.pid)
    for _ in range(repeat):
        for name, server in servers.items():
            result = bench_ingest(server.url, points, server.proc.pid, helpers)
            runs[name].append(result)
            print(f"  {label} / {name}: {result['points_per_s']:,.0f} points/s, CPU ms/batch "
                  + ", ".join(f"{k} {v:.2f}" for k, v in result["cpu_ms"].items()) + f" (load {os.getloadavg()[0]:.1f})", flush=True)
    rows = []
    for name, results in runs.items():
        rate = statistics.median(r["points_per_s"] for r in results)
        cpu = {k: statistics.median(r["cpu_ms"][k] for r in results) for k in results[0]["cpu_ms"]}
        cpu_text = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if v > 0)
        each = " / ".join(f"{r['points_per_s'] / 1000:,.0f}k" for r in results)
        last = results[-1]
        rows.append(("ingest", f"{label}, {name}", f"{rate:,.0f} points/s",
                     f"runs {each}; CPU ms per 1,000-point batch: {cpu_text}; server RSS {last['rss_start_mb']:.0f} -> peak {last['rss_peak_mb']:.0f} MB"))
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ingest-points", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="ingest runs per server; the table quotes the median")
    parser.add_argument("--baseline-src", help="a source tree of an earlier mldash (e.g. `git archive OLD mldash | tar -x -C DIR`) to run side by side as 'before'")
    parser.add_argument("--mlflow-points", type=int, default=20_000)
    parser.add_argument("--read-points", type=int, default=10_000_000)
    parser.add_argument("--pg-read-points", type=int, default=2_000_000)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-reads", action="store_true")
    args = parser.parse_args()

    rows = []
    cleanup = []
    # PYTHONSAFEPATH: "python -m" must not import this tree (the current directory) first.
    before_env = {"PYTHONPATH": os.path.abspath(args.baseline_src), "PYTHONSAFEPATH": "1"} if args.baseline_src else None
    try:
        # Embedded: SQLite + a chunk folder.
        data = Path(tempfile.mkdtemp(prefix="bench-server-"))
        servers = {"this version": start_server(data=data / "now", extra_args=["--no-ui"])}
        if before_env:
            servers["before"] = start_server(data=data / "before", extra_args=["--no-ui"], env=before_env)
        cleanup += [s.stop for s in servers.values()]
        rows += ingest_rows("mldash embedded (SQLite + folder)", servers, args.ingest_points, args.repeat)
        for server in servers.values():
            server.stop()
        if not args.skip_reads:
            exp_id = bulk_load({"db": f"sqlite:///{data}/now/mldash.db", "blob": str(data / "now" / "chunks")}, args.read_points)
            server = servers["this version"]
            server.start()
            reads = bench_reads(server.url, exp_id, args.read_points)
            rows.append(("read(limit=1000)", f"mldash embedded, {args.read_points:,}-point series", f"median {reads['median_ms']:.1f} ms", f"p95 {reads['p95_ms']:.1f} ms, random start"))
            print(rows[-1], flush=True)
            server.stop()

        if not args.skip_postgres:
            pg = start_postgres(fsync=True)
            cleanup.append(pg.stop)
            s3 = start_moto()
            cleanup.append(s3.stop)
            helpers = helper_processes(PG_USER, (s3.proc.pid,))

            def pg_server(extra=(), env=None, name="now"):
                store = {"db": pg.create_database(), "blob": f"s3://{s3.make_bucket()}/chunks", "s3_endpoint": s3.endpoint}
                server = start_server(store["db"], store["blob"], s3_endpoint=s3.endpoint, data=data / f"pg-{name}",
                                      extra_args=["--no-ui", *extra], env=env)
                cleanup.append(server.stop)
                return server, store

            now, store_args = pg_server()
            servers = {"this version": now}
            if before_env:
                servers["before"] = pg_server(env=before_env, name="before")[0]
            rows += ingest_rows("mldash PostgreSQL 15 (fsync on) + S3 (moto)", servers, args.ingest_points, args.repeat, helpers)
            for name, server in servers.items():
                if name != "this version":
                    server.stop()
            if not args.skip_reads:
                exp_id = bulk_load(store_args, args.pg_read_points)
                reads = bench_reads(now.url, exp_id, args.pg_read_points)
                rows.append(("read(limit=1000)", f"mldash PostgreSQL + S3 (moto), {args.pg_read_points:,}-point series", f"median {reads['median_ms']:.1f} ms", f"p95 {reads['p95_ms']:.1f} ms"))
                print(rows[-1], flush=True)

        rate = bench_mlflow(args.mlflow_points)
        if rate is not None:
            rows.append(("ingest", "MLflow tracking server (SQLite), log_batch", f"{rate:,.0f} points/s", f"{args.mlflow_points:,} points"))
            print(rows[-1], flush=True)
    finally:
        for fn in reversed(cleanup):
            try:
                fn()
            except Exception:
                pass

    header = (f"Machine: {platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
              f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}; client and server on the same machine; "
              f"load average at the end {os.getloadavg()[0]:.1f}.")
    lines = ["# Team server benchmarks", "", header, "", "| what | system | result | notes |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "benchmarks" / "results" / "server.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
