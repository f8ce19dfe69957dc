"""Filtering many runs on the team server (PostgreSQL) against MLflow's search_runs.

    python benchmarks/bench_analysis_server.py                  # 10,000 runs
    python benchmarks/bench_analysis_server.py --runs 2000 --repeat 3

Starts a throwaway PostgreSQL cluster (as the tests do), stores the same runs in
mldash (through the Store's own ingest: params, summary, tags, two series each) and
in MLflow (its SqlAlchemyStore on its own database in the same cluster: params,
the same metric points, status), starts ``mldash server`` and ``mlflow server`` on
them, and times, warm (one untimed call first, then the median of ``--repeat``):

- ``GET /api/v1/experiments?filter=...&limit=0``: the filter alone, as SQL (the count);
- ``list_remote_experiments(url, filter=...)``: every matching run with its params,
  summary, latest points and headline statistics, paged over HTTP;
- MLflow's ``search_runs`` for the same runs (the filter in its own language; params
  are strings there, so ``lr < 1e-3`` becomes ``lr != '0.001'``, and a series can
  only be tested by its latest value; it has no ``or``), through ``mlflow server``
  and in process.

Each pair must return the same number of runs. Prints a table and writes
benchmarks/results/analysis_server.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
from _server_support import free_port, start_postgres, start_server, wait_for_port  # noqa: E402

T0 = 1_700_000_000_000
ARCHS = ("resnet50", "vit-b/16", "resnet18", "mlp")
STATUSES = ("COMPLETED", "FAILED", "RUNNING")
MLFLOW_STATUS = {"COMPLETED": "FINISHED", "FAILED": "FAILED", "RUNNING": "RUNNING"}


def run_values(i: int, points: int) -> dict:
    base = 0.1 + (i % 100) / 100
    return {
        "prefix": f"bench/sweep-{i // 1000}/run-{i:05d}",
        "status": STATUSES[i % 3],
        "params": {"lr": round(1e-4 * (1 + i % 10), 6), "batch_size": 32 * (1 + i % 4), "model.arch": ARCHS[i % 4], "seed": i},
        "summary": {"acc": (i % 97) / 97, "epochs": 10},
        "series": {
            "train/loss": [base + 0.8 / (k + 1) for k in range(points)],
            "val/loss": [base + 0.5 / (k + 1) for k in range(points)],
        },
    }


# Each case: (what, mldash filter, MLflow filter). MLflow has no OR, no IN on params and
# compares params as strings: lr < 1e-3 is lr != '0.001' here (lr runs 0.0001 ... 0.001).
CASES = [
    ("the issue's example", "params.lr < 1e-3 and status = COMPLETED and metrics.val/loss.min < 0.2",
     "params.lr != '0.001' and attributes.status = 'FINISHED' and metrics.`val/loss` < 0.2"),
    ("one metric, broad", "metrics.val/loss.last < 0.5", "metrics.`val/loss` < 0.5"),
    ("a glob on a parameter", 'params.model.arch ~ "resnet*"', "params.`model.arch` LIKE 'resnet%'"),
]


def seed_mldash(db: str, blob: str, n: int, points: int) -> float:
    from mldash.server.storage import Store

    store = Store(db, blob)
    started = time.perf_counter()

    def one(i: int) -> None:
        v = run_values(i, points)
        exp_id = store.upsert_experiment(
            "default", v["prefix"],
            {"status": v["status"], "tags": ["sweep"], "started_at": 1.7e9 + i, "finished_at": 1.7e9 + i + 600, "duration": 600.0},
        )["id"]
        store.set_document(exp_id, "parameters", v["params"])
        store.set_document(exp_id, "summary", v["summary"])
        store.append_metrics(exp_id, [
            {"name": name, "start_index": 0, "points": [[T0 + k, {"value": x, "step": k}] for k, x in enumerate(values)]}
            for name, values in v["series"].items()
        ])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(n)))
    store.close()
    return time.perf_counter() - started


def seed_mlflow(db: str, artifacts: str, n: int, points: int) -> tuple[str, float]:
    from mlflow.entities import Metric, Param, RunStatus, RunTag
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(db, artifacts)
    exp_id = store.create_experiment("bench")
    started = time.perf_counter()

    def one(i: int) -> None:
        v = run_values(i, points)
        run = store.create_run(exp_id, "bench", T0, [RunTag("mlflow.runName", v["prefix"])], v["prefix"])
        run_id = run.info.run_id
        params = [Param(k, str(x)) for k, x in v["params"].items()]
        metrics = [Metric(name, x, T0 + k, k) for name, values in v["series"].items() for k, x in enumerate(values)]
        metrics += [Metric(f"summary.{k}", x, T0, 0) for k, x in v["summary"].items()]
        store.log_batch(run_id, metrics, params, [RunTag("sweep", "true")])
        store.update_run_info(run_id, getattr(RunStatus, MLFLOW_STATUS[v["status"]]), T0 + 600_000, None)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(n)))
    return exp_id, time.perf_counter() - started


def timed(fn, repeat: int) -> tuple[float, object]:
    result = fn()  # warm: caches, connections, the regex translation
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=20, help="points per series (two series a run)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "analysis_server.md"))
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    from mldash.remote.client import list_remote_experiments

    cluster = start_postgres()
    folder = Path(tempfile.mkdtemp(prefix="bench-analysis-"))
    servers, procs = [], []
    rows: list[tuple] = []
    try:
        db = cluster.create_database()
        seconds = seed_mldash(db, str(folder / "chunks"), args.runs, args.points)
        print(f"mldash: stored {args.runs:,} runs in {seconds:.0f} s", flush=True)
        server = start_server(db, str(folder / "chunks"), data=folder / "server", timeout=120)
        servers.append(server)
        api = httpx.Client(base_url=server.url + "/api/v1", timeout=120)
        mldash_counts = {}
        for what, text, _ in CASES:
            count_s, reply = timed(lambda t=text: api.get("/experiments", params={"filter": t, "limit": 0}).json(), args.repeat)
            list_s, listed = timed(lambda t=text: list_remote_experiments(server.url, filter=t), args.repeat)
            assert len(listed) == reply["total"], (len(listed), reply["total"])
            mldash_counts[what] = reply["total"]
            rows.append((what, "mldash server, the filter in SQL (count only)", f"{count_s * 1000:.1f} ms", f"{reply['total']:,} runs"))
            rows.append((what, "mldash server, list_remote_experiments (every matching row)", f"{list_s * 1000:.0f} ms", f"{len(listed):,} runs"))
            print(rows[-2], rows[-1], flush=True)
        api.close()

        if not args.skip_mlflow:
            import mlflow
            from mlflow.tracking import MlflowClient

            mdb = cluster.create_database().replace("postgresql://", "postgresql+psycopg://")
            exp_id, seconds = seed_mlflow(mdb, str(folder / "mlflow-art"), args.runs, args.points)
            print(f"MLflow: stored {args.runs:,} runs in {seconds:.0f} s", flush=True)
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                 "--backend-store-uri", mdb, "--default-artifact-root", str(folder / "mlflow-art"), "--workers", "1"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "MLFLOW_LOGGING_LEVEL": "ERROR"},
            )
            procs.append(proc)
            wait_for_port(port, 180, proc)
            for _ in range(600):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            remote = MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")
            local = MlflowClient(tracking_uri=mdb)

            def search(client, text):
                found, token = [], None
                while True:
                    page = client.search_runs([exp_id], filter_string=text, max_results=50_000, page_token=token)
                    found += page
                    token = page.token
                    if not token:
                        return found

            for what, _, text in CASES:
                http_s, found = timed(lambda t=text: search(remote, t), args.repeat)
                local_s, found_local = timed(lambda t=text: search(local, t), args.repeat)
                assert len(found) == len(found_local) == mldash_counts[what], (what, len(found), mldash_counts[what])
                rows.append((what, "MLflow server (PostgreSQL), search_runs", f"{http_s * 1000:.0f} ms", f"{len(found):,} runs"))
                rows.append((what, "MLflow in process (PostgreSQL), search_runs", f"{local_s * 1000:.0f} ms", f"{len(found):,} runs"))
                print(rows[-2], rows[-1], flush=True)
            mlflow.set_tracking_uri(None)
    finally:
        for server in servers:
            server.stop()
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        cluster.stop()

    load = os.getloadavg()
    header = (
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()} {os.cpu_count()}-core, Python {platform.python_version()}; "
        f"`python benchmarks/bench_analysis_server.py --runs {args.runs} --points {args.points} --repeat {args.repeat}`; "
        f"PostgreSQL 15 (a throwaway cluster, fsync off), client and servers on this machine, warm, median of "
        f"{args.repeat}; load average at the end {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}."
    )
    lines = [header, "", "| filter | system | time | matches |", "|---|---|---|---|"]
    lines += [f"| {what} | {system} | {t} | {n} |" for what, system, t, n in rows]
    lines += ["", "Filters:", ""]
    lines += [f"- {what}: mldash `{m}`; MLflow `{f}`" for what, m, f in CASES]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
