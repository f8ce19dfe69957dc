"""Dashboard speed in headless Chromium: 1,000 experiments, and a 1-million-point chart.

    python benchmarks/bench_ui.py [--runs 1000] [--points 1000000] [--repeat 5]

Builds a root with real ``mldash.Experiment`` runs, starts ``mldash ui`` as a
subprocess and times, in Chromium (/usr/bin/chromium, via Playwright):

* experiments view: navigation until all rows of the table are in the DOM;
* 1M-point chart: navigation to the run until its chart is drawn, first with a
  cold server cache (the series file is parsed once) and then warm;
* the bytes the chart's request carries, against the series' size on disk.

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


def time_page(browser, url: str, ready_js: str) -> float:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        t0 = time.perf_counter()
        page.goto(url, wait_until="commit")
        page.wait_for_function(ready_js, timeout=60_000, polling=10)
        return time.perf_counter() - t0
    finally:
        page.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "root")
        old = os.getcwd()
        os.chdir(tmp)  # no git lookups for the generated runs
        try:
            build_root(root, args.runs, args.points)
        finally:
            os.chdir(old)
        server = UiServer(root)
        # Loaded: the first page of rows is drawn and the count covers every run (rows
        # further down are drawn as the table scrolls).
        total = args.runs + 1
        rows_ready = (
            "() => document.querySelectorAll('#runs tbody tr[data-prefix]').length >= Math.min(100, %d)"
            " && document.getElementById('count').textContent.startsWith('%d of')" % (total, total)
        )
        points_text = f"{args.points:,}"
        chart_ready = (
            "() => { const n = document.querySelector('.chart-note'); const c = document.querySelector('#charts canvas');"
            f" return n && n.textContent.startsWith('{points_text} points') && c; }}"
        )
        try:
            with sync_playwright() as p:
                browser = launch_chromium(p)
                list_url = server.url
                chart_url = server.url + "#/exp/bench%2Fone-million"

                cold_list = time_page(browser, list_url, rows_ready)
                warm_list = [time_page(browser, list_url, rows_ready) for _ in range(args.repeat)]
                cold_chart = time_page(browser, chart_url, chart_ready)
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
                browser.close()
        finally:
            server.stop()

    med = statistics.median
    results = [
        (f"experiments view, {args.runs:,} runs (cold server cache)", f"{cold_list:.3f} s", "1 load"),
        (f"experiments view, {args.runs:,} runs", f"{med(warm_list):.3f} s", f"median of {args.repeat}"),
        (f"{points_text}-point chart, first view (server parses the file)", f"{cold_chart:.3f} s", "1 load"),
        (f"{points_text}-point chart", f"{med(warm_chart):.3f} s", f"median of {args.repeat}"),
        ("chart data sent (downsampled, 600 px)", f"{sent / 1024:.0f} KiB", f"vs {raw / 2**20:.0f} MiB of points on disk"),
    ]
    table = ["| measurement | time | note |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in results]
    header = (
        f"# Dashboard benchmark\n\n{platform.node()} ({os.cpu_count()} cores, {platform.machine()}), "
        f"{time.strftime('%Y-%m-%d')}, headless Chromium {_chromium_version()}; "
        "times are from navigation start until the rows / the drawn chart are in the page.\n"
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
