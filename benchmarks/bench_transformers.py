"""Hugging Face Trainer: what report_to="mldash" costs, side by side with the built-ins.

    python benchmarks/bench_transformers.py              # full run (a few minutes)
    python benchmarks/bench_transformers.py --quick      # smaller counts, a smoke check
    python benchmarks/bench_transformers.py --out benchmarks/results/transformers.md

Part 1, per logged step. A tiny BERT trains N steps with ``logging_steps=1`` under
report_to = "none", "mldash", "tensorboard", "wandb" (offline) and "mlflow" (a local SQLite
database), each case in a fresh interpreter, repeated and interleaved. Two numbers:
- in callback: the time spent inside the integration's own callback methods per step,
  and once per run for set-up and close (on_train_begin, on_train_end, plus
  ``wandb.finish()`` which its callback leaves to the user). This is what the
  integration adds to the training thread, measured precisely even on a noisy machine.
- train(): the wall time of ``trainer.train()`` per step, minus that of "none". This
  also counts background work competing for the 2 cores, but it is noisy.

Part 2, the start-up hook (mldash_transformers.pth and the byte-compiled module it
imports): what it adds to every interpreter start, measured as site.addpackage of the
file in fresh interpreters, end to end (``python -c pass`` in a bare venv with and
without the hook, interleaved; noisy), and as instructions counted by valgrind
(deterministic), plus the cost the finder adds to each later import.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

CASES = ["none", "mldash", "tensorboard", "wandb", "mlflow"]

RUN = r'''
import json, os, sys, time
os.environ["HF_HUB_OFFLINE"] = "1"
case, steps, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
os.environ.update(MLDASH_ROOT=os.path.join(work, "mldash"), MLDASH_PROJECT="bench",
                  WANDB_MODE="offline", WANDB_DIR=work, WANDB_SILENT="true",
                  TENSORBOARD_LOGGING_DIR=os.path.join(work, "tb"),
                  MLFLOW_TRACKING_URI="sqlite:///" + os.path.join(work, "mlflow.db"),
                  DISABLE_MLFLOW_INTEGRATION="FALSE")
import torch
torch.set_num_threads(1)  # steadier timings on a shared 2-core machine
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments
from transformers.integrations import INTEGRATION_TO_CALLBACK
if case == "mldash":
    import mldash.integrations.transformers  # noqa: F401  (the .pth hook does this without it)
torch.manual_seed(0)
model = BertForSequenceClassification(BertConfig(
    vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
    intermediate_size=32, max_position_embeddings=16, num_labels=2))
g = torch.Generator().manual_seed(0)
data = [{"input_ids": torch.randint(0, 50, (8,), generator=g), "labels": i % 2} for i in range(64)]
args = TrainingArguments(os.path.join(work, "out"), max_steps=steps, logging_steps=1,
    per_device_train_batch_size=4, use_cpu=True, disable_tqdm=True, save_strategy="no",
    report_to=case, run_name=f"bench-{case}", seed=0)
trainer = Trainer(model=model, args=args, train_dataset=data)

spent = {"step": 0.0, "once": 0.0}
on_log = []
ONCE = ("on_train_begin", "on_train_end")
cls = INTEGRATION_TO_CALLBACK.get(case)
for cb in trainer.callback_handler.callbacks:
    if cls is not None and isinstance(cb, cls):
        for name in [n for n in dir(cb) if n.startswith("on_") and n != "on_init_end"]:
            method = getattr(cb, name)
            def timed(*a, _m=method, _n=name, **k):
                t = time.perf_counter()
                try:
                    return _m(*a, **k)
                finally:
                    d = time.perf_counter() - t
                    spent["once" if _n in ONCE else "step"] += d
                    if _n == "on_log":
                        on_log.append(d)
            setattr(cb, name, timed)
t = time.perf_counter()
c = time.process_time()
trainer.train()
wall = time.perf_counter() - t
cpu = time.process_time() - c
if case == "wandb":
    import wandb
    t = time.perf_counter()
    wandb.finish()
    spent["once"] += time.perf_counter() - t
on_log.sort()
print(json.dumps({"wall": wall, "cpu": cpu, "callback": spent["step"], "once": spent["once"], "steps": steps,
                  "on_log_median": on_log[len(on_log) // 2] if on_log else 0.0}))
'''


def run_case(case: str, steps: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-hf-{case}-") as work:
        out = subprocess.run([sys.executable, "-c", RUN, case, str(steps), work],
                             capture_output=True, text=True, timeout=900)
        if out.returncode != 0:
            raise RuntimeError(f"{case} failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def per_step(steps: int, repeats: int) -> list[tuple]:
    results: dict[str, list[dict]] = {c: [] for c in CASES}
    for r in range(repeats):
        for case in CASES if r % 2 == 0 else reversed(CASES):
            results[case].append(run_case(case, steps))
            print(f"  {case:12s} repeat {r + 1}: {results[case][-1]}", file=sys.stderr)
    base = statistics.median(x["wall"] for x in results["none"]) / steps
    base_cpu = statistics.median(x["cpu"] for x in results["none"]) / steps
    rows = []
    for case in CASES:
        runs = results[case]
        callback = statistics.median(x["callback"] for x in runs) / steps * 1e6
        once = statistics.median(x["once"] for x in runs) * 1e3
        total = statistics.median((x["callback"] + x["once"]) for x in runs) / steps * 1e3
        wall = statistics.median(x["wall"] for x in runs) / steps * 1e3
        on_log = statistics.median(x["on_log_median"] for x in runs) * 1e6
        cpu = statistics.median(x["cpu"] for x in runs) / steps * 1e3
        rows.append((case, callback, on_log, once, total, cpu - base_cpu * 1e3, wall, wall - base * 1e3))
    return rows


def _install_hook(folder: str) -> None:
    """Write the hook's two files into ``folder`` and byte-compile the module, as pip does."""
    import py_compile

    from mldash._hf_hook import PTH_NAME, STARTUP_MODULE, STARTUP_SOURCE, pth_contents

    with open(os.path.join(folder, PTH_NAME), "w") as f:
        f.write(pth_contents())
    module = os.path.join(folder, STARTUP_MODULE + ".py")
    with open(module, "w") as f:
        f.write(STARTUP_SOURCE)
    py_compile.compile(module, doraise=True)


def _remove_hook(folder: str) -> None:
    import shutil

    from mldash._hf_hook import PTH_NAME, STARTUP_MODULE

    for name in (PTH_NAME, STARTUP_MODULE + ".py"):
        if os.path.exists(os.path.join(folder, name)):
            os.remove(os.path.join(folder, name))
    shutil.rmtree(os.path.join(folder, "__pycache__"), ignore_errors=True)


def hook_costs(runs: int) -> dict:
    import shutil
    import site

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from mldash._hf_hook import FINDER_NAME, PTH_NAME, STARTUP_MODULE

    costs: dict = {"start_runs": runs}
    with tempfile.TemporaryDirectory(prefix="bench-hf-pth-") as folder:
        _install_hook(folder)
        with open(os.path.join(folder, "empty.pth"), "w") as f:
            f.write("# another package's .pth, for comparison\n")

        # Cold: a fresh interpreter processing the .pth once (the module from its .pyc).
        probe = (f"import sys, time; sys.path.append({folder!r}); import site; t = time.perf_counter(); "
                 f"site.addpackage({folder!r}, sys.argv[1], set()); print(time.perf_counter() - t)")
        cold: dict = {PTH_NAME: [], "empty.pth": []}
        for _ in range(runs):
            for name in cold:
                out = subprocess.run([sys.executable, "-S", "-c", probe, name], capture_output=True,
                                     text=True, check=True)
                cold[name].append(float(out.stdout))
        costs["cold_us"] = statistics.median(cold[PTH_NAME]) * 1e6
        costs["cold_empty_us"] = statistics.median(cold["empty.pth"]) * 1e6

        # The finder's cost for every other import.
        sys.path.append(folder)
        site.addpackage(folder, PTH_NAME, set())
        finder = sys.meta_path[0]
        assert finder.__name__ == FINDER_NAME
        n = 200_000
        t = time.perf_counter()
        for _ in range(n):
            finder.find_spec("json.decoder")
        costs["find_spec_ns"] = (time.perf_counter() - t) / n * 1e9
        sys.meta_path.remove(finder)
        sys.modules.pop(STARTUP_MODULE, None)
        sys.path.remove(folder)

        # End to end: `python -c pass` in one venv, with and without the hook, interleaved.
        venv = os.path.join(folder, "venv")
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
        python = os.path.join(venv, "bin", "python")
        purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        times: dict = {"without": [], "with": []}
        for i in range(runs * 2):
            present = i % 2 == 0
            (_install_hook if present else _remove_hook)(purelib)
            t = time.perf_counter()
            subprocess.run([python, "-c", "pass"], check=True)
            times["with" if present else "without"].append(time.perf_counter() - t)
        costs["start_without_ms"] = statistics.median(times["without"]) * 1e3
        costs["start_with_ms"] = statistics.median(times["with"]) * 1e3

        # Deterministic: instructions executed by `python -c pass` (valgrind), when available.
        if shutil.which("valgrind"):
            def instructions() -> int:
                out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                                      python, "-c", "pass"], capture_output=True, text=True, check=True)
                return int(out.stderr.split("Collected :")[1].split()[0])

            _remove_hook(purelib)
            costs["instr_without"] = instructions()
            _install_hook(purelib)
            costs["instr_with"] = instructions()
    return costs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", default=None, help="also write the tables as markdown here")
    options = parser.parse_args()
    steps = options.steps or (100 if options.quick else 300)
    repeats = options.repeats or (1 if options.quick else 3)

    load_before = os.getloadavg()[0]
    rows = per_step(steps, repeats)
    hook = hook_costs(60 if options.quick else 300)
    load = f"{min(load_before, os.getloadavg()[0]):.1f}-{max(load_before, os.getloadavg()[0]):.1f}"

    lines = [
        "# Hugging Face Trainer integration",
        "",
        f"Machine: {platform.machine()} 2-core VM, Python {platform.python_version()}, "
        f"{_dt.date.today().isoformat()}. `python benchmarks/bench_transformers.py` "
        f"({steps} steps, `logging_steps=1`, {repeats} repeats, medians; each case in a fresh interpreter). "
        f"Load average {load} (other work shared the machine).",
        "",
        "## Overhead per logged step",
        "",
        "| report_to | in callback, µs/step | on_log µs/call (median) | set-up + close, ms once "
        f"| in callback, all, ms/step over {steps} | process CPU vs none, ms/step "
        "| train() ms/step | train() vs none, ms/step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case, callback, on_log, once, total, cpu, wall, delta in rows:
        lines.append(f"| {case} | {callback:.1f} | {on_log:.1f} | {once:.1f} | {total:.3f} | {cpu:+.2f} "
                     f"| {wall:.2f} | {delta:+.2f} |")
    lines += [
        "",
        "in callback: time inside the integration's callback methods on the training thread, every "
        "event except on_train_begin/on_train_end, per step. set-up + close: on_train_begin and "
        "on_train_end (plus `wandb.finish()`, which its callback leaves to the user), once per run. "
        "process CPU: CPU time of the training process during train() (all its threads, so "
        "mldash's writer thread counts; wandb's separate service process does not). "
        "train(): wall time. Both vary by about ±1 ms/step between identical runs on this shared "
        "2-core machine, so only the in-callback columns resolve 0.1 ms.",
        "",
        "## Start-up hook (`mldash_transformers.pth`)",
        "",
        "| what | cost |",
        "|---|---:|",
        f"| processing the .pth (and importing its module) in a fresh interpreter (`python -S`, site.addpackage, median of "
        f"{hook['start_runs']}) | {hook['cold_us']:.0f} µs |",
        f"| the same for another package's comment-only .pth | {hook['cold_empty_us']:.0f} µs |",
        f"| each later import, for the finder's name check | {hook['find_spec_ns']:.0f} ns |",
        f"| `python -c pass` in a bare venv without the hook (median of {hook['start_runs']}) "
        f"| {hook['start_without_ms']:.2f} ms |",
        f"| `python -c pass` with the hook (median of {hook['start_runs']}) | {hook['start_with_ms']:.2f} ms |",
    ]
    if "instr_with" in hook:
        lines += [
            f"| instructions of `python -c pass` without / with the hook (valgrind) "
            f"| {hook['instr_without'] / 1e6:.2f}M / {hook['instr_with'] / 1e6:.2f}M "
            f"(+{(hook['instr_with'] - hook['instr_without']) / hook['instr_without'] * 100:.1f}%) |",
        ]
    lines += [
        "",
        "Without transformers the hook never does anything else: it imports nothing (tested in "
        "tests/integrations/test_transformers.py).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if options.out:
        with open(options.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
