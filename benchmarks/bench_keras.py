"""Per-batch overhead of MLDashCallback in a Keras 3 fit, beside Keras' own loggers.

    python benchmarks/bench_keras.py [--backends tensorflow,torch,jax] [--steps 300] [--rounds 7]
                                     [--out benchmarks/results/keras.md]

For each backend (one subprocess each: Keras picks its backend at import), a
tiny MLP is fitted for two epochs of ``--steps`` batches with each configuration
below, interleaved, one of each per round. Measured: the second epoch (steady
state: no tracing, no experiment creation, no final flush), per batch, as wall
time and as the process's CPU time over all threads (Keras' async batch dispatch
and mldash's writer run on other threads; on a busy machine wall time mostly
measures the neighbours). The table quotes medians over rounds and the overhead
against no callback; "noise" is half the interquartile range of the no-callback
rounds.

Configurations: no callback; ``MLDashCallback(log_every_n_batches=1)`` (every
batch's loss, metric and learning rate); ``MLDashCallback()`` (the default, every
10 batches); ``keras.callbacks.CSVLogger`` (epoch rows only: it has no batch
option); ``keras.callbacks.TensorBoard(update_freq=1)`` (every batch; needs
TensorFlow installed, whatever the backend).
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

CONFIGS = ["none", "mldash every batch", "mldash default (10)", "CSVLogger (epoch)", "TensorBoard every batch"]


# ---- worker: one backend, in its own process -------------------------------------
def worker(steps: int, rounds: int) -> None:
    import keras
    import numpy as np

    from mldash.integrations.keras import MLDashCallback

    batch = 32
    rng = np.random.default_rng(0)
    x = rng.random((steps * batch, 16), dtype=np.float32)
    y = (x.sum(axis=1, keepdims=True) > 8).astype("float32")
    tmp = tempfile.mkdtemp(prefix="bench-keras-")

    class EpochClock(keras.callbacks.Callback):
        """Times the last epoch; only epoch hooks, so async dispatch is unaffected."""

        def on_epoch_begin(self, epoch, logs=None):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            self.wall = time.perf_counter() - self.t0
            self.cpu = time.process_time() - self.c0

    def model():
        keras.utils.set_random_seed(0)
        m = keras.Sequential(
            [keras.Input((16,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1, activation="sigmoid")]
        )
        m.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
        return m

    def callbacks(config, run):
        if config == "none":
            return []
        if config == "mldash every batch":
            return [MLDashCallback(f"bench/every-{run}", root=tmp, log_every_n_batches=1)]
        if config == "mldash default (10)":
            return [MLDashCallback(f"bench/default-{run}", root=tmp)]
        if config == "CSVLogger (epoch)":
            return [keras.callbacks.CSVLogger(os.path.join(tmp, f"log-{run}.csv"))]
        if config == "TensorBoard every batch":
            return [keras.callbacks.TensorBoard(os.path.join(tmp, f"tb-{run}"), update_freq=1)]
        raise ValueError(config)

    m = model()
    m.fit(x, y, batch_size=batch, epochs=1, verbose=0)  # warm up the backend
    results: dict = {c: {"wall": [], "cpu": []} for c in CONFIGS}
    for run in range(rounds):
        for config in CONFIGS:
            try:
                extra = callbacks(config, run)
                clock = EpochClock()
                model().fit(x, y, batch_size=batch, epochs=2, verbose=0, callbacks=[*extra, clock])
            except Exception as error:  # e.g. TensorBoard without TensorFlow
                results[config] = {"error": f"{type(error).__name__}: {error}"[:120]}
                continue
            if "error" not in results[config]:
                results[config]["wall"].append(clock.wall / steps * 1e6)
                results[config]["cpu"].append(clock.cpu / steps * 1e6)
    # The hook alone, called directly with the float logs Keras hands callbacks:
    # what one batch costs the thread that runs it, free of the fit's noise.
    direct = {}
    logs = {"loss": 0.5, "accuracy": 0.75}
    for config in ("mldash every batch", "TensorBoard every batch"):
        try:
            m = model()
            m.fit(x[:batch], y[:batch], batch_size=batch, epochs=1, verbose=0)
            cb = callbacks(config, "direct")[0]
            cb.set_model(m)
            cb.set_params({"epochs": 1, "steps": steps, "verbose": 0})
            cb.on_train_begin()
            cb.on_epoch_begin(0)
            n = 20_000
            t0 = time.perf_counter()
            for i in range(n):
                cb.on_train_batch_begin(i)
                cb.on_train_batch_end(i, logs)
            direct[config] = (time.perf_counter() - t0) / n * 1e6
            cb.on_epoch_end(0, dict(logs))
            cb.on_train_end(dict(logs))
        except Exception as error:
            direct[config] = f"{type(error).__name__}: {error}"[:120]
    print("RESULT " + json.dumps({"backend": keras.backend.backend(), "keras": keras.__version__,
                                  "results": results, "direct": direct}))


# ---- driver ---------------------------------------------------------------------------
def summarize(values):
    q = statistics.quantiles(values, n=4) if len(values) >= 4 else [min(values), 0, max(values)]
    return statistics.median(values), (q[2] - q[0]) / 2


def table(runs: list[dict], steps: int, rounds: int) -> str:
    lines = [
        f"Per-batch cost of a Keras 3 fit, tiny MLP (16-32-1), batch 32, {steps} batches per epoch, "
        f"second epoch, median of {rounds} interleaved rounds; overhead = config minus no callback.",
        "",
        "| backend | configuration | wall us/batch | wall overhead | cpu us/batch | cpu overhead |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for run in runs:
        res = run["results"]
        base_wall, noise_wall = summarize(res["none"]["wall"])
        base_cpu, noise_cpu = summarize(res["none"]["cpu"])
        for config in CONFIGS:
            r = res[config]
            if "error" in r:
                lines.append(f"| {run['backend']} | {config} | n/a ({r['error']}) | | | |")
                continue
            wall, _ = summarize(r["wall"])
            cpu, _ = summarize(r["cpu"])
            if config == "none":
                lines.append(
                    f"| {run['backend']} | {config} | {wall:.0f} | (noise ±{noise_wall:.0f}) | {cpu:.0f} | (noise ±{noise_cpu:.0f}) |"
                )
            else:
                lines.append(
                    f"| {run['backend']} | {config} | {wall:.0f} | {wall - base_wall:+.0f} ({wall / base_wall:.2f}x) "
                    f"| {cpu:.0f} | {cpu - base_cpu:+.0f} ({cpu / base_cpu:.2f}x) |"
                )
    lines += [
        "",
        "The batch hook alone (on_train_batch_begin + on_train_batch_end called directly with "
        "Keras' float logs, 20,000 calls, on the calling thread):",
        "",
        "| backend | callback | us per batch |",
        "|---|---|---:|",
    ]
    for run in runs:
        for config, value in run.get("direct", {}).items():
            shown = f"{value:.1f}" if isinstance(value, float) else f"n/a ({value})"
            lines.append(f"| {run['backend']} | {config} | {shown} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="tensorflow,torch,jax")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", default=None, help="also write the table (markdown) here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.steps, args.rounds)
        return

    runs = []
    for backend in args.backends.split(","):
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0",
                   CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu", OMP_NUM_THREADS="1")
        done = subprocess.run(
            [sys.executable, __file__, "--worker", "--steps", str(args.steps), "--rounds", str(args.rounds)],
            env=env, capture_output=True, text=True,
        )
        line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
        if done.returncode != 0 or not line:
            print(f"{backend}: failed\n{done.stderr[-3000:]}", file=sys.stderr)
            continue
        runs.append(json.loads(line[-1][len("RESULT "):]))
        print(f"{backend}: done", file=sys.stderr)

    load = os.getloadavg()
    header = (
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"keras {runs[0]['keras'] if runs else '?'}, load average {load[0]:.1f} during the run, "
        f"{time.strftime('%Y-%m-%d')}. OMP_NUM_THREADS=1 (a tiny model runs fastest on one thread)."
    )
    text = table(runs, args.steps, args.rounds)
    print(header)
    print()
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"# Keras: MLDashCallback overhead per batch\n\n{header}\n\n{text}\n")


if __name__ == "__main__":
    main()
