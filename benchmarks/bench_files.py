"""Saving and uploading a large file, side by side with a plain copy and a plain upload.

    python benchmarks/bench_files.py              # a 1 GiB file, 3 repeats
    python benchmarks/bench_files.py --quick      # 256 MiB, 2 repeats

Local, each case in a fresh interpreter (peak RSS is its own), the source hot in
the page cache, ``os.sync()`` before each case so none starts behind another's
writeback, cases interleaved across repeats after one round that is not counted
(on a VM, memory the guest has not touched yet is slow to write the first time),
medians quoted:

- ``copyfile``: ``shutil.copyfile`` (sendfile in the kernel, no fsync): the plain copy;
- ``copyfile+fsync``: the same, then fsync: a copy that survives a power cut;
- ``save()``: ``exp.files(file_path=...).save()`` until it returns the complete record
  (copied, SHA-256 computed beside the copy, fsynced, renamed, recorded);
- ``save(wait=False)``: until the call returns (the copy is taken; what the training
  loop waits for), and ``done``: until its future holds the record;
- ``sha256``: hashing the file alone, the floor of any save that returns its hash.

Upload, to one embedded ``mldash server`` (SQLite + a folder) on this machine,
started with the same uvicorn options as ``mldash server``:

- ``plain PUT``: one streamed HTTP PUT of the file (requests, 1 MiB pieces, a
  Content-Length) to a bare ASGI handler in that same server process, which writes
  the body to a file in the server's data folder (no hash, no fsync): the plain upload;
- ``plain PUT+fsync``: the same, fsynced before it answers (durable, as mldash's is);
- ``mldash sync``: ``sync_root`` of a run holding the saved file, until the server
  holds its bytes (streamed, SHA-256 checked, fsynced, renamed) and its record.
Peak RSS of the client process, and the server's growth during the upload (sampled).

The machine is shared and its writeback speed varies: read the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))

CASES = {
    "copyfile": """
import shutil
C0[0] = time.process_time(); t0 = time.perf_counter(); shutil.copyfile(SRC, os.path.join(D, "copy")); t1 = time.perf_counter()
report(t1 - t0)
""",
    "copyfile+fsync": """
import shutil
C0[0] = time.process_time(); t0 = time.perf_counter(); shutil.copyfile(SRC, os.path.join(D, "copy"))
fd = os.open(os.path.join(D, "copy"), os.O_RDONLY); os.fsync(fd); os.close(fd); t1 = time.perf_counter()
report(t1 - t0)
""",
    "sha256": """
import hashlib
C0[0] = time.process_time(); t0 = time.perf_counter(); h = hashlib.sha256(); f = open(SRC, "rb", buffering=0); b = bytearray(1 << 20); v = memoryview(b)
while True:
    n = f.readinto(b)
    if not n: break
    h.update(v[:n])
t1 = time.perf_counter()
report(t1 - t0)
""",
    "save()": """
import mldash
exp = mldash.Experiment("bench/files", root=D, system_metrics=False, capture_console=False); exp.start(); exp.flush()
C0[0] = time.process_time(); t0 = time.perf_counter(); r = exp.files(file_path=SRC, prefix="/models").save(); t1 = time.perf_counter()
assert r["sizeBytes"] == os.path.getsize(SRC)
exp.finish()
report(t1 - t0)
""",
    "save(wait=False)": """
import mldash
exp = mldash.Experiment("bench/files", root=D, system_metrics=False, capture_console=False); exp.start(); exp.flush()
C0[0] = time.process_time(); t0 = time.perf_counter(); f = exp.files(file_path=SRC, prefix="/models").save(wait=False); t1 = time.perf_counter()
r = f.result(); t2 = time.perf_counter()
exp.finish()
report(t1 - t0, done=t2 - t0)
""",
}

SETUP = """
import json, os, resource, sys, time
sys.path.insert(0, REPO)
SRC, D = sys.argv[1], sys.argv[2]
C0 = [0.0]
def report(seconds, **extra):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rss_mib": rss, "cpu_s": time.process_time() - C0[0], **extra}))
"""


def run_case(code: str, src: str, folder: str) -> dict:
    script = f"REPO = {REPO!r}\n" + SETUP + code
    out = subprocess.run([sys.executable, "-c", script, src, folder], capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_source(path: str, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for k in range(size >> 20):
            f.write(block[:8] + k.to_bytes(8, "little") + block[16:])  # no two MiB alike
    with open(path, "rb") as f:  # hot in the page cache, as a file just written by training is
        while f.read(1 << 24):
            pass


# ---- the upload ------------------------------------------------------------------------
def server_app():
    """mldash's own server app, plus a bare streamed-PUT handler outside its middleware:
    the plain upload's endpoint, in the same process."""
    from mldash.server.app import factory

    app = factory()
    target = os.path.join(os.environ["BENCH_PLAIN_DIR"], "plain.bin")

    async def outer(scope, receive, send):
        if scope["type"] == "http" and scope["path"] in ("/bench/plain", "/bench/plain-fsync") and scope["method"] == "PUT":
            with open(target, "wb") as f:
                while True:
                    message = await receive()
                    f.write(message.get("body", b""))
                    if not message.get("more_body"):
                        break
                if scope["path"] == "/bench/plain-fsync":
                    f.flush()
                    os.fsync(f.fileno())
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        await app(scope, receive, send)

    return outer


def start_server(data: str, port: int) -> subprocess.Popen:
    import orjson

    config = {"db": "sqlite:///" + os.path.join(data, "mldash.db"), "blob": os.path.join(data, "chunks"),
              "auth": "off", "ui": False}
    env = {**os.environ, "MLDASH_SERVER_CONFIG": orjson.dumps(config).decode(), "BENCH_PLAIN_DIR": data,
           "PYTHONPATH": os.pathsep.join([REPO, HERE])}
    code = ("import uvicorn; uvicorn.run('bench_files:server_app', factory=True, host='127.0.0.1', port=%d, "
            "http='httptools', loop='uvloop', log_level='warning', access_log=False)" % port)
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start")


_PLAIN = """
import requests
URL = sys.argv[3]
class Body:
    def __init__(self, f, n): self.f, self.n = f, n
    def __len__(self): return self.n
    def __iter__(self):
        while True:
            data = self.f.read(1 << 20)
            if not data: return
            yield data
size = os.path.getsize(SRC)
C0[0] = time.process_time(); t0 = time.perf_counter()
with open(SRC, "rb", buffering=0) as f:
    r = requests.put(URL + "/bench/PATH", data=Body(f, size), headers={"Content-Type": "application/octet-stream"})
r.raise_for_status(); t1 = time.perf_counter()
report(t1 - t0)
"""
UPLOADS = {
    "plain PUT": _PLAIN.replace("PATH", "plain"),
    "plain PUT+fsync": _PLAIN.replace("PATH", "plain-fsync"),
    "mldash sync": """
from mldash.remote.sync import sync_root
URL = sys.argv[3]
C0[0] = time.process_time(); t0 = time.perf_counter(); result = sync_root(D, URL); t1 = time.perf_counter()
assert not result.failed and not result.quarantined, result
report(t1 - t0)
""",
}


def run_upload(code: str, src: str, folder: str, url: str, server_pid: int) -> dict:
    import psutil

    server = psutil.Process(server_pid)
    base = server.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], server.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    script = f"REPO = {REPO!r}\n" + SETUP + code
    try:
        out = subprocess.run([sys.executable, "-c", script, src, folder, url], capture_output=True, text=True, timeout=900)
    finally:
        stop.set()
        sampler.join()
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    got["server_growth_mib"] = (peak[0] - base) / 2**20
    return got


def saved_run(src: str, folder: str) -> None:
    """A run holding the file, saved locally and not uploaded yet."""
    sys.path.insert(0, REPO)
    import mldash

    exp = mldash.Experiment("bench/upload", root=folder, system_metrics=False, capture_console=False)
    exp.files(file_path=src, prefix="/models").save()
    exp.finish()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size-mib", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--tmp", default="/tmp", help="where the data goes (default /tmp)")
    parser.add_argument("--json", help="write the raw numbers here")
    args = parser.parse_args()
    size = (args.size_mib or (256 if args.quick else 1024)) << 20
    repeats = args.repeats or (2 if args.quick else 3)
    work = tempfile.mkdtemp(prefix="mldash-bench-files-", dir=args.tmp)
    results: dict = {}
    try:
        src = os.path.join(work, "source.bin")
        make_source(src, size)
        for k in range(repeats + 1):  # the first round warms the page cache and is not counted
            for name, code in CASES.items():
                folder = os.path.join(work, "case")
                os.makedirs(folder)
                os.sync()
                got = run_case(code, src, folder)
                if k:
                    results.setdefault(name, []).append(got)
                shutil.rmtree(folder)
        port = _free_port()
        data = os.path.join(work, "server")
        os.makedirs(data)
        proc = start_server(data, port)
        try:
            url = f"http://127.0.0.1:{port}"
            for k in range(repeats + 1):
                for name, code in UPLOADS.items():
                    folder = os.path.join(work, f"runs-{k}")
                    if name == "mldash sync":
                        saved_run(src, folder)  # a fresh server-side run each repeat; the bytes too (new namespace)
                        _renamespace(folder, f"bench{k}")
                    os.sync()
                    got = run_upload(code, src, folder, url, proc.pid)
                    if k:
                        results.setdefault(name, []).append(got)
                    if os.path.exists(os.path.join(data, "plain.bin")):
                        os.unlink(os.path.join(data, "plain.bin"))
        finally:
            proc.terminate()
            proc.wait(30)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results, size, repeats)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"size": size, "results": results}, f, indent=1)


def _renamespace(folder: str, namespace: str) -> None:
    """Each repeat uploads into its own namespace, so its blob is new to the server."""
    import orjson

    for root, _dirs, files in os.walk(folder):
        if "experiment.json" in files:
            path = os.path.join(root, "experiment.json")
            meta = orjson.loads(open(path, "rb").read())
            meta["namespace"] = namespace
            open(path, "wb").write(orjson.dumps(meta))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def report(results: dict, size: int, repeats: int) -> None:
    gib = size / 2**30
    median = {name: statistics.median(r["seconds"] for r in runs) for name, runs in results.items()}
    print(f"\n{size >> 20} MiB file, {repeats} repeats, medians; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}\n")
    print("| case | seconds | GiB/s | vs plain | CPU s | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, base in (("copyfile", None), ("copyfile+fsync", "copyfile"), ("sha256", "copyfile"), ("save()", "copyfile"),
                       ("save(wait=False)", "copyfile")):
        s = median[name]
        rss = max(r["rss_mib"] for r in results[name])
        vs = f"{median[base] / s:.0%}" if base else ""
        cpu = statistics.median(r["cpu_s"] for r in results[name])
        print(f"| {name} | {s:.3f} | {gib / s:.2f} | {vs} | {cpu:.2f} | {rss:.0f} |")
        if name == "save(wait=False)":
            done = statistics.median(r["done"] for r in results[name])
            print(f"| save(wait=False), until the record | {done:.3f} | {gib / done:.2f} | {median['copyfile'] / done:.0%} | | |")
    print(f"\nagainst copyfile+fsync (both durable): save() {median['copyfile+fsync'] / median['save()']:.0%}, "
          f"save(wait=False) until the record "
          f"{median['copyfile+fsync'] / statistics.median(r['done'] for r in results['save(wait=False)']):.0%}")
    print("\n| upload | seconds | GiB/s | vs plain PUT | client CPU s | client peak RSS (MiB) | server growth (MiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in UPLOADS:
        s = median[name]
        rss = max(r["rss_mib"] for r in results[name])
        grown = max(r["server_growth_mib"] for r in results[name])
        vs = f"{median['plain PUT'] / s:.0%}" if name != "plain PUT" else ""
        cpu = statistics.median(r["cpu_s"] for r in results[name])
        print(f"| {name} | {s:.3f} | {gib / s:.2f} | {vs} | {cpu:.2f} | {rss:.0f} | {grown:.0f} |")
    print(f"\nmldash sync against plain PUT+fsync (both durable): {median['plain PUT+fsync'] / median['mldash sync']:.0%}")
    print("\nall runs (seconds):", {k: [round(r["seconds"], 3) for r in v] for k, v in results.items()})


if __name__ == "__main__":
    main()
