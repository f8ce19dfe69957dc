"""Dashboard speed in headless Chromium: 1,000 experiments, and a 1-million-point chart.

    python benchmarks/bench_ui.py [--runs 1000] [--points 1000000] [--repeat 5] [--baseline REV]

Builds a root with real ``mldash.Experiment`` runs, starts ``mldash ui`` as a
subprocess and times, in Chromium (/usr/bin/chromium, via Playwright):

* 1M-point chart, first view: ``mldash ui`` is started and the browser opens the
  run's page the moment the URL is printed: with an empty disk cache (the server
  parses the file), and again after a restart with the cache the first start wrote;
* experiments view: navigation until the first page of rows is in the DOM;
* 1M-point chart once the experiments view was opened first, and repeat views;
* the bytes the chart's request carries, against the series' size on disk;
* server side, without a browser: parsing the 1M-point file, and reading it
  back from the disk cache.

``--baseline REV`` runs the first-view and server-side measurements also
against the dashboard of that git revision (its ``mldash`` tree exported to a
temporary folder and put first on PYTHONPATH), side by side in the same run.

Prints a markdown table (medians) and writes benchmarks/results/ui.md.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import mldash  # noqa: E402
from _ui_support import UiServer, canvas_ink, launch_chromium  # noqa: E402


def build_root(root: str, runs: int, points: int) -> None:
    t0 = time.perf_counter()
    for i in range(runs):
        exp = mldash.Experiment(project=f"proj{i % 5}", folder=f"sweep{i % 20}", name=f"run-{i:04d}", root=root)
        with exp:
            exp.params.set(lr=10 ** -(1 + i % 4), batch_size=2 ** (4 + i % 4), model={"arch": ["resnet", "vit"][i % 2], "depth": 18 + i % 3})
            for name in ("train/loss", "val/loss", "val/accuracy"):
                exp.metrics(name).append_batch([{"value": random.random(), "step": s} for s in range(20)])
    big = mldash.Experiment("bench/one-million", root=root)
    with big:
        loss = big.metrics("loss")
        for start in range(0, points, 50_000):
            loss.append_batch(
                [{"value": math.exp(-i / 200_000) + 0.05 * random.random() + (3.0 if i % 250_007 == 0 else 0.0), "step": i}
                 for i in range(start, min(points, start + 50_000))]
            )
    print(f"built {runs} runs + a {points:,}-point series in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


def export_revision(rev: str, dest: str) -> str:
    """``git archive REV mldash`` unpacked under ``dest``; returns the folder for PYTHONPATH."""
    repo = os.path.dirname(HERE)
    os.makedirs(dest, exist_ok=True)
    archive = subprocess.run(["git", "-C", repo, "archive", rev, "mldash"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
    return dest


def start_server(root: str, *extra: str, pythonpath: str | None = None) -> UiServer:
    old = os.environ.get("PYTHONPATH")
    if pythonpath:
        os.environ["PYTHONPATH"] = pythonpath
    try:
        return UiServer(root, *extra)
    finally:
        if pythonpath:
            if old is None:
                os.environ.pop("PYTHONPATH")
            else:
                os.environ["PYTHONPATH"] = old


SERVER_SIDE = r"""
import inspect, json, os, statistics, sys, tempfile, time
from mldash.ui.local import LocalSource
root, prefix, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
new = "cache" in inspect.signature(LocalSource).parameters
def once(**kw):
    source = LocalSource(root, **kw)
    t0 = time.perf_counter()
    out = source.metric_view(prefix, "loss", "step", width=600)
    took = time.perf_counter() - t0
    if new:
        source.wait_warm(120)
        source.close()
    return took, out
out = {"parse": statistics.median(once(**(dict(cache=False, coarse_bytes=0, warm=False) if new else {}))[0] for _ in range(repeat))}
if new:
    first = [once(cache=False, coarse_bytes=1) for _ in range(repeat)]
    assert all(view.get("coarse") for _, view in first), "expected a coarse first view"
    out["coarse"] = statistics.median(took for took, _ in first)
    folder = tempfile.mkdtemp()
    once(cache=folder, coarse_bytes=0)
    out["cached"] = statistics.median(once(cache=folder)[0] for _ in range(repeat))
print(json.dumps(out))
"""


def server_side(root: str, prefix: str, repeat: int, pythonpath: str | None = None) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run(
        [sys.executable, "-c", SERVER_SIDE, root, prefix, str(repeat)], capture_output=True, text=True, env=env, check=True
    )
    return __import__("json").loads(done.stdout.strip().splitlines()[-1])


def first_views(browser, root: str, url_path: str, ready_js: str, full_js: str, list_js: str, repeat: int,
                cache_root: str, baseline: str | None) -> dict[str, list]:
    """Start ``mldash ui`` and open ``url_path`` at once, ``repeat`` times each, interleaved:

    "cold" with an empty disk cache, "cached" after a restart on the cache the cold start
    wrote, "baseline" (the older tree, with an empty cache where it has one), and "after_list": empty
    cache, the experiments view opened first (as a user would), then the chart. Each time
    is a pair: (first chart drawn, the min/max chart drawn).
    """
    out: dict[str, list] = {"cold": [], "cached": [], "baseline": [], "after_list": []}
    # A baseline with a disk cache of its own gets an empty one each start too (else its
    # default folder is warm after the first start, and it is timed against a cold one).
    base_cli = os.path.join(baseline, "mldash", "ui", "cli.py") if baseline else None
    base_cache = bool(base_cli and os.path.exists(base_cli) and "--cache-dir" in open(base_cli).read())
    for i in range(repeat):
        cache = os.path.join(cache_root, f"cache-{i}")
        runs = [("cold", None), ("cached", None)] + ([("baseline", baseline)] if baseline else []) + [("after_list", None)]
        for kind, pythonpath in runs:
            if pythonpath:
                extra = ("--cache-dir", cache + "-base") if base_cache else ()
            else:
                extra = ("--cache-dir", cache if kind != "after_list" else cache + "-list")
            server = start_server(root, *extra, pythonpath=pythonpath)
            try:
                if kind == "after_list":
                    time_page(browser, server.url, list_js)
                out[kind].append(time_page(browser, server.url + url_path, ready_js, full_js))
            finally:
                server.stop()
    return out


def time_page(browser, url: str, ready_js: str, full_js: str | None = None):
    """Seconds from navigation until ``ready_js`` holds; with ``full_js``, a pair: also until that holds."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        t0 = time.perf_counter()
        page.goto(url, wait_until="commit")
        page.wait_for_function(ready_js, timeout=60_000, polling=10)
        first = time.perf_counter() - t0
        if full_js is None:
            return first
        page.wait_for_function(full_js, timeout=60_000, polling=10)
        return first, time.perf_counter() - t0
    finally:
        page.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--first-repeat", type=int, default=3, help="server starts per first-view measurement")
    parser.add_argument("--baseline", help="git revision whose dashboard to time alongside (e.g. HEAD~3)")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "root")
        old = os.getcwd()
        # Outside the repo: no git lookups for the generated runs, and `python -m mldash` /
        # `python -c` would put the repo's own mldash ahead of PYTHONPATH (the baseline).
        os.chdir(tmp)  # back to ``old`` once measured; an error ends the script anyway
        build_root(root, args.runs, args.points)
        baseline = export_revision(args.baseline, os.path.join(tmp, "baseline")) if args.baseline else None
        total = args.runs + 1
        # Loaded: the first page of rows is drawn and the count covers every run (rows
        # further down are drawn as the table scrolls).
        rows_ready = (
            "() => document.querySelectorAll('#runs tbody tr[data-prefix]').length >= Math.min(100, %d)"
            " && document.getElementById('count').textContent.startsWith('%d of')" % (total, total)
        )
        points_text = f"{args.points:,}"
        chart_ready = (
            "() => { const n = document.querySelector('.chart-note'); const c = document.querySelector('#charts canvas');"
            f" return n && n.textContent.startsWith('{points_text} points') && c; }}"
        )
        # The min/max view of every point (not the coarse sample drawn while the server reads).
        chart_full = (
            "() => { const n = document.querySelector('.chart-note'); const c = document.querySelector('#charts canvas');"
            f" return n && n.textContent.startsWith('{points_text} points · showing') && c; }}"
        )
        chart_path = "#/exp/bench%2Fone-million"
        load_before = os.getloadavg()[0]
        side, side_old = [], []
        for _ in range(args.repeat):  # interleaved, so that the machine's load hits both alike
            side.append(server_side(root, "bench/one-million", 1))
            if baseline:
                side_old.append(server_side(root, "bench/one-million", 1, baseline))
        with sync_playwright() as p:
            browser = launch_chromium(p)
            first = first_views(
                browser, root, chart_path, chart_ready, chart_full, rows_ready, args.first_repeat, tmp, baseline
            )
            server = start_server(root, "--cache-dir", os.path.join(tmp, "cache-main"))
            try:
                list_url = server.url
                chart_url = server.url + chart_path
                cold_list = time_page(browser, list_url, rows_ready)
                warm_list = [time_page(browser, list_url, rows_ready) for _ in range(args.repeat)]
                time_page(browser, chart_url, chart_ready)  # the chart's first view on this server
                warm_chart = [time_page(browser, chart_url, chart_ready) for _ in range(args.repeat)]

                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(chart_url)
                page.wait_for_function(chart_ready, timeout=60_000)
                ink = canvas_ink(page, "#charts canvas")[0]
                sent = page.evaluate(
                    "async () => (await (await fetch('api/series?prefix=bench/one-million&name=loss&x=step&width=600')).text()).length"
                )
                raw = os.path.getsize(os.path.join(root, "bench", "one-million", "metrics", "loss", "data.jsonl"))
                page.close()
            finally:
                server.stop()
            browser.close()
        load_after = os.getloadavg()[0]
        os.chdir(old)

    med = statistics.median
    n = args.first_repeat

    def pair(kind: str) -> tuple[float, float]:
        return med(t[0] for t in first[kind]), med(t[1] for t in first[kind])

    cold, cached, after_list = pair("cold"), pair("cached"), pair("after_list")
    old_note = ""
    if baseline:
        old_first = pair("baseline")
        old_note = f"; {args.baseline}: {old_first[1]:.3f} s"
    was = f" Baseline for comparison: the dashboard at git {args.baseline}, run interleaved with this one." if baseline else ""
    parse = med(x["parse"] for x in side)
    rows = [
        (f"{points_text}-point chart, first view after `mldash ui` starts, empty disk cache: first drawn (coarse sample)",
         f"{cold[0]:.3f} s", f"median of {n} starts"),
        (f"{points_text}-point chart, same first view: min/max of every point drawn", f"{cold[1]:.3f} s",
         f"median of {n} starts{old_note}"),
        (f"{points_text}-point chart, first view after a restart (disk cache filled)", f"{cached[1]:.3f} s",
         f"median of {n} starts (min/max drawn at once: {cached[0]:.3f} s to first draw)"),
        (f"{points_text}-point chart, first view after the experiments view (empty disk cache)", f"{after_list[1]:.3f} s",
         f"median of {n} starts; start-up warming read the series while the list loaded"),
        (f"{points_text}-point chart, repeat views", f"{med(warm_chart):.3f} s", f"median of {args.repeat}"),
        (f"experiments view, {args.runs:,} runs (first load)", f"{cold_list:.3f} s", "1 load"),
        (f"experiments view, {args.runs:,} runs", f"{med(warm_list):.3f} s", f"median of {args.repeat}"),
        ("chart data sent (downsampled, 600 px)", f"{sent / 1024:.0f} KiB", f"vs {raw / 2**20:.0f} MiB of points on disk"),
        (f"server only: parse the {points_text}-point file + view", f"{parse:.3f} s",
         f"median of {args.repeat}" + (f"; {args.baseline}: {med(x['parse'] for x in side_old):.3f} s" if baseline else "")),
        ("server only: coarse first response (sampled at data.idx marks)", f"{med(x['coarse'] for x in side):.3f} s",
         f"median of {args.repeat}"),
        ("server only: columns from the disk cache + view", f"{med(x['cached'] for x in side):.3f} s", f"median of {args.repeat}"),
    ]
    table = ["| measurement | time | note |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    header = (
        f"# Dashboard benchmark\n\n{platform.node()} ({os.cpu_count()} cores, {platform.machine()}), "
        f"{time.strftime('%Y-%m-%d')}, headless Chromium {_chromium_version()}; "
        "times are from navigation start until the rows / the drawn chart are in the page. "
        f"Load average {load_before:.1f} before, {load_after:.1f} after (other work on the machine).{was}\n"
        f"Chart canvas pixels drawn: {ink}.\n\n"
    )
    text = header + "\n".join(table) + "\n"
    print(text)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "ui.md"), "w") as f:
        f.write(text)


def _chromium_version() -> str:
    try:
        return subprocess.run(["/usr/bin/chromium", "--version"], capture_output=True, text=True, timeout=20).stdout.split()[1]
    except Exception:
        return "?"


if __name__ == "__main__":
    main()
