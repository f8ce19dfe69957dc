"""Fixtures for the dashboard tests: real runs in a tmp root, a real `mldash ui`, real Chromium."""

from __future__ import annotations

import contextlib
import math
import os
import re
import subprocess
import sys
import time

import mldash
import pytest
from _procs import stop_process

HOSTILE = "<img src=x onerror=alert(1)>"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
ARTIFACTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "test-artifacts")


def fill_root(root: str) -> dict:
    """Three finished runs (one failed, one with hostile strings everywhere); returns their prefixes."""
    runs = {}
    for lr, name in ((0.1, "lr-0.1"), (0.01, "lr-0.01")):
        exp = mldash.Experiment(project="vision", folder="resnet", name=name, root=root, tags=["baseline"])
        with exp:
            exp.params.set(model={"arch": "resnet18", "depth": 18}, lr=lr, batch_size=32, seed=1)
            for step in range(300):
                loss = 2.0 * math.exp(-step * lr / 3) + (5.0 if step == 137 else 0.0)  # one spike
                exp.metrics("train/loss").append(value=loss, step=step, epoch=step // 100)
            for epoch in range(3):
                exp.metrics("val/accuracy").append(value=0.5 + 0.1 * epoch + lr, epoch=epoch, step=(epoch + 1) * 100)
                exp.checkpoint(f"ckpt/epoch={epoch}.ckpt", step=(epoch + 1) * 100, epoch=epoch, score=0.5 + 0.1 * epoch,
                               is_best=epoch == 2)
            exp.summary.set(train_runtime=12.5, best_accuracy=0.7 + lr)
            for i in range(40):
                exp.log(f"epoch {i // 10} batch {i} done", level="debug" if i % 2 else "info")
            exp.log("learning rate looks high", level="warn", metadata={"lr": lr})
        runs[name] = exp.prefix

    failed = mldash.Experiment(project="nlp", name="bert-crash", root=root)
    try:
        with failed:
            failed.params.set(lr=3e-5, batch_size=16, model={"arch": "bert-base"})
            for step in range(50):
                failed.metrics("loss").append(value=1.0 / (step + 1), step=step)
            raise RuntimeError("CUDA out of memory while allocating tensor")
    except RuntimeError:
        pass
    runs["failed"] = failed.prefix

    evil = mldash.Experiment(project="nlp", name=HOSTILE, root=root, description=HOSTILE, tags=[HOSTILE])
    with evil:
        evil.params.set(**{HOSTILE: HOSTILE, "note": "<script>alert(2)</script>"})
        evil.metrics(HOSTILE).append(value=1.5, step=0)
        evil.metrics(HOSTILE).append(value=0.5, step=1)
        evil.log(HOSTILE, level="error", metadata={"traceback": HOSTILE})
    runs["evil"] = evil.prefix
    return runs


class UiServer:
    """`python -m mldash ui ROOT --port 0` as a subprocess; ``url`` is what it printed."""

    def __init__(self, root: str, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mldash", "ui", root, "--port", "0", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.output = []
        deadline = time.time() + 30
        self.url = None
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            found = re.search(r"(http://\S+?/)(\?token=\S+)?\s", line)
            if found:
                self.url = found.group(1)
                break
        if self.url is None:
            self.stop()
            raise RuntimeError("mldash ui did not print its URL:\n" + "".join(self.output))

    def stop(self) -> None:
        stop_process(self.proc)


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@contextlib.contextmanager
def watched_page(browser, *, console_ok=None, response_ok=None, **context):
    """A fresh page (a context with ``context``'s options) that fails the test on any
    script error, dialog or console error (a CSP violation is one), but the console
    texts ``console_ok(text)`` allows; with ``response_ok``, also on any response of
    400 or more that ``response_ok(response)`` does not allow."""
    context = browser.new_context(**{"viewport": {"width": 1400, "height": 900}, **context})
    page = context.new_page()
    problems = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    page.on("console", lambda msg: msg.type == "error" and not (console_ok and console_ok(msg.text))
            and problems.append(f"console: {msg.text}"))
    if response_ok is not None:
        page.on("response", lambda response: response.status >= 400 and not response_ok(response)
                and problems.append(f"{response.status}: {response.url}"))
    page.set_default_timeout(15_000)
    yield page
    context.close()
    assert problems == []


def canvas_ink(page, selector: str = "canvas") -> list[int]:
    """For each canvas under ``selector``: how many pixels are not background (not transparent or white)."""
    return page.eval_on_selector_all(
        selector,
        """cs => cs.map(c => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) {
                if (d[i + 3] > 0 && !(d[i] > 240 && d[i + 1] > 240 && d[i + 2] > 240)) n++;
            }
            return n;
        })""",
    )


def screenshot(page, name: str) -> str:
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = os.path.join(ARTIFACTS, name)
    page.screenshot(path=path, full_page=True)
    return path


@pytest.fixture(scope="module", autouse=True)
def column_cache(tmp_path_factory):
    """The dashboard's disk cache of parsed columns goes to a tmp folder, not ~/.cache."""
    folder = str(tmp_path_factory.mktemp("ui-cache"))
    old = os.environ.get("MLDASH_UI_CACHE")
    os.environ["MLDASH_UI_CACHE"] = folder  # read by LocalSource and by `mldash ui` subprocesses
    yield folder
    if old is None:
        os.environ.pop("MLDASH_UI_CACHE", None)
    else:
        os.environ["MLDASH_UI_CACHE"] = old


RED_LINE = "\x1b[31mred alert\x1b[0m plain"


def write_console(run_path: str, lines: list[tuple[str, str]]) -> None:
    """Append console records (stream, text) the way read_console reads them."""
    import json

    folder = os.path.join(run_path, "console")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "console.jsonl"), "a", encoding="utf-8") as f:
        for i, (stream, text) in enumerate(lines):
            f.write(json.dumps({"timestamp": 1000.0 + i, "stream": stream, "text": text}) + "\n")


def system_run(root: str, prefix: str = "monitor/watch") -> str:
    """A finished run with sys/cpu points and console lines (an ANSI red one, the hostile string)."""
    exp = mldash.Experiment(prefix, root=root)
    with exp:
        for i in range(30):
            exp.metrics("sys/cpu").append(process_percent=50.0 + 40 * math.sin(i / 3), system_percent=20.0 + i, step=i)
            exp.metrics("loss").append(value=1.0 / (i + 1), step=i)
    write_console(os.path.join(root, *prefix.split("/")),
                  [("stdout", "starting up"), ("stderr", RED_LINE), ("stdout", HOSTILE), ("stderr", "a warning on stderr")])
    return exp.prefix
