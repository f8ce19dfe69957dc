"""Train a tiny model with its run replicated to an mldash server, then read it back
from the server alone, and upload an offline run with `mldash sync`.

    python examples/remote_example.py                          # starts its own server
    python examples/remote_example.py --remote http://127.0.0.1:8765 [--token T]

With no --remote (and no $MLDASH_URL) it starts `mldash server` on a free port
with an embedded store in a temporary folder, and stops it at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import torch
from torch import nn

import mldash
from mldash.remote.client import list_remote_experiments


def start_server(data: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mldash", "server", "--port", str(port), "--data", data, "--no-ui"]
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/api/v1/health", timeout=1).close()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("mldash server did not start")


def train(exp: mldash.Experiment, epochs: int = 10) -> float:
    torch.manual_seed(0)
    x = torch.rand(256, 1)
    y = 3 * x + 1 + 0.05 * torch.randn_like(x)
    model = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    exp.params.set(lr=0.05, epochs=epochs, model={"hidden": 16, "activation": "tanh"})
    step = 0
    for epoch in range(epochs):
        for i in range(0, len(x), 32):
            loss = nn.functional.mse_loss(model(x[i : i + 32]), y[i : i + 32])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            # Written locally at once; the uploader thread sends it in the background.
            exp.metrics("train/loss").append(value=loss.detach(), step=step, epoch=epoch)
            step += 1
        with torch.no_grad():
            val = nn.functional.mse_loss(model(x), y).item()
        exp.metrics("val/loss").append(value=val, epoch=epoch)
        exp.log(f"epoch {epoch} done", metadata={"val_loss": val})
    exp.summary.set(final_val_loss=val)
    return val


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--remote", default=os.environ.get("MLDASH_URL"))
    parser.add_argument("--token", default=os.environ.get("MLDASH_TOKEN"))
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="mldash-remote-example-")
    server = None
    url = args.remote
    if not url:
        server, url = start_server(os.path.join(work, "server"))
        print(f"started mldash server at {url}")
    try:
        # 1. A run replicated while it trains (local-first: also in ROOT/examples/remote).
        root = os.path.join(work, "runs")
        with mldash.Experiment("examples/remote", root=root, remote=url, token=args.token) as exp:
            val = train(exp)
        print(f"trained {exp.prefix}: val_loss={val:.4f}, local copy in {exp.path}")

        # 2. Read it back from the server alone: a root with no local copy.
        remote = mldash.Experiment("examples/remote", root=os.path.join(work, "elsewhere"), remote=url, token=args.token)
        points = remote.metrics("train/loss").read(0, 10_000)
        print(f"server holds {points['total']} train/loss points; params {remote.params.get()}")
        print(f"last log on the server: {remote.read_logs(0, 1000)['data'][-1]['message']!r}")

        # 3. A run recorded with no server at all, uploaded afterwards by `mldash sync`.
        offline_root = os.path.join(work, "offline")
        with mldash.Experiment("examples/offline", root=offline_root) as offline:
            train(offline, epochs=3)
        command = [sys.executable, "-m", "mldash", "sync", offline_root, "--remote", url]
        if args.token:
            command += ["--token", args.token]
        subprocess.run(command, check=True)

        for row in list_remote_experiments(url, args.token, project="examples"):
            latest = {name: round(p["data"].get("value", 0.0), 4) for name, p in row["metrics"].items()}
            print(f"  {row['prefix']:<20} {row['status']:<10} {latest}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
