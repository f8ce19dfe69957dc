"""Per-step overhead of Lightning loggers: mldash against its peers, in one run.

    python benchmarks/bench_lightning.py [--steps 2000] [--repeats 5] [--out benchmarks/results/lightning.md]

A fit of ``--steps`` steps with three ``self.log`` calls per step and
``log_every_n_steps=1`` (so the logger's ``log_metrics`` and ``save`` run every
step), on a model so small that the loop itself is all there is. Measured:
the mean time per step over the steady part of the loop (after a warm-up),
minus the same for ``logger=False``, in the process's CPU time (wall time is
shown too, but on a busy machine it mostly measures the neighbours).
Configurations run interleaved, one of each per round; the table quotes the
median over rounds. ``log_metrics+save us`` calls the logger directly. Setup
and finalize (experiment creation, final flush, wandb/mlflow shutdown) are
reported apart.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # the file store, as the brief asks
warnings.filterwarnings("ignore")

import lightning.pytorch as pl  # noqa: E402
import orjson  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

WARMUP = 200


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss", loss)
        self.log("train/mae", (self.layer(x) - y).abs().mean())
        self.log("lr", 0.01)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class StepClock(pl.Callback):
    """Times every step, in wall time and in this process's CPU time (all its threads:
    a logger's background writer counts; time lost to other processes on a busy
    machine does not). The steady part of the loop starts after WARMUP steps."""

    def __init__(self):
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.first = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self.first is None:
            self.first = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    @staticmethod
    def per_step_ms(times: list[float]) -> float:
        steady = times[WARMUP:]
        return (steady[-1] - steady[0]) * 1000 / (len(steady) - 1)


class OrjsonLinesLogger(pl.loggers.Logger):
    """The floor: a logger that only appends one orjson line per call to a buffered file."""

    def __init__(self, path):
        super().__init__()
        self._file = open(path, "ab", buffering=1 << 20)

    name = "floor"
    version = "0"

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self._file.write(orjson.dumps([step, metrics], option=orjson.OPT_APPEND_NEWLINE))

    def finalize(self, status):
        self._file.close()


def make_logger(kind: str, tmp: str):
    if kind == "none":
        return False, None
    if kind == "mldash":
        from mldash.integrations.lightning import MLDashLogger

        return MLDashLogger(project="bench", root=tmp, system_metrics=10), None
    if kind == "mldash, system metrics off":
        from mldash.integrations.lightning import MLDashLogger

        return MLDashLogger(project="bench", root=tmp, system_metrics=False), None
    if kind == "floor (orjson lines)":
        return OrjsonLinesLogger(os.path.join(tmp, "floor.jsonl")), None
    if kind == "CSVLogger":
        return pl.loggers.CSVLogger(tmp), None
    if kind == "TensorBoardLogger":
        return pl.loggers.TensorBoardLogger(tmp), None
    if kind == "WandbLogger(offline)":
        import wandb

        return pl.loggers.WandbLogger(project="bench", save_dir=tmp, offline=True), wandb.finish
    if kind == "MLFlowLogger(file)":
        return pl.loggers.MLFlowLogger(experiment_name="bench", tracking_uri=f"file:{tmp}/mlruns"), None
    raise ValueError(kind)


def run_once(kind: str, steps: int, data: DataLoader) -> tuple[float, float, float]:
    """(wall ms per steady-state step, CPU ms per step, seconds outside the loop)."""
    with tempfile.TemporaryDirectory() as tmp:
        logger, cleanup = make_logger(kind, tmp)
        clock = StepClock()
        trainer = pl.Trainer(
            max_steps=steps, max_epochs=1, logger=logger, log_every_n_steps=1, callbacks=[clock],
            accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False,
            enable_checkpointing=False, num_sanity_val_steps=0,
        )
        started = time.perf_counter()
        trainer.fit(Tiny(), data)
        if cleanup is not None:
            cleanup()
        total = time.perf_counter() - started
    loop = clock.wall[-1] - clock.first
    return clock.per_step_ms(clock.wall), clock.per_step_ms(clock.cpu), total - loop


def direct_us(kind: str, calls: int = 2000) -> tuple[float, float]:
    """Microseconds per ``log_metrics`` + ``save`` pair, called directly (no Trainer):
    (on the caller's thread, CPU of the whole process through ``finalize``, so
    background encoding and writing count)."""
    if kind == "none":
        return 0.0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        logger, cleanup = make_logger(kind, tmp)
        logger.log_hyperparams({"lr": 0.01})  # creates the run
        metrics = {"train/loss": 0.5, "train/mae": 0.25, "lr": 0.01, "epoch": 0}
        cpu = time.process_time()
        started = time.perf_counter()
        for step in range(calls):
            logger.log_metrics(metrics, step=step)
            logger.save()
        elapsed = time.perf_counter() - started
        logger.finalize("success")
        cpu = time.process_time() - cpu
        if cleanup is not None:
            cleanup()
    return elapsed * 1e6 / calls, cpu * 1e6 / calls


KINDS = ["none", "mldash", "mldash, system metrics off", "floor (orjson lines)", "CSVLogger", "TensorBoardLogger",
         "WandbLogger(offline)", "MLFlowLogger(file)"]


def main() -> None:
    parser = argparse.ArgumentParser(description="Lightning logger overhead per step")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="*", help="a subset of: " + ", ".join(KINDS))
    parser.add_argument("--out", help="also write the table (markdown) here")
    args = parser.parse_args()
    for name in ("lightning", "lightning.pytorch", "mlflow", "wandb", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    kinds = ["none"] + [k for k in KINDS[1:] if not args.only or k in args.only]
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x = torch.randn(args.steps, 8)
    data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=1)
    for kind in kinds:  # warm imports and caches once, untimed
        run_once(kind, WARMUP + 20, data)
    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in kinds}
    direct: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    for r in range(args.repeats):
        for kind in kinds:
            results[kind].append(run_once(kind, args.steps, data))
            direct[kind].append(direct_us(kind))
        print(f"round {r + 1}/{args.repeats}: " + ", ".join(
            f"{k} {results[k][-1][1]:.3f}" for k in kinds), file=sys.stderr, flush=True)

    def overhead(kind: str) -> float:  # CPU time, against logger=False in the same round
        return statistics.median(p[1] - b[1] for p, b in zip(results[kind], results["none"]))

    ours = overhead("mldash") if "mldash" in results else None
    ours_direct = statistics.median(d[0] for d in direct["mldash"]) if "mldash" in direct else None
    rows = []
    for kind in kinds:
        wall = statistics.median(p[0] for p in results[kind])
        cpu = statistics.median(p[1] for p in results[kind])
        outside = statistics.median(p[2] for p in results[kind])
        us = statistics.median(d[0] for d in direct[kind])
        us_cpu = statistics.median(d[1] for d in direct[kind])
        is_ref = kind in ("none", "mldash")
        rows.append((
            kind, f"{wall:.3f}", f"{cpu:.3f}", "" if kind == "none" else f"{overhead(kind):+.3f}",
            "" if kind == "none" else f"{us:.1f}",
            "" if kind == "none" else f"{us_cpu:.1f}",
            "" if is_ref or not ours_direct else f"{us / ours_direct:.1f}x",
            f"{outside:.2f}",
        ))
    header = ("logger", "wall ms/step", "CPU ms/step", "overhead CPU ms/step",
              "log_metrics+save us", "same, CPU incl. background us", "vs mldash",
              "setup+finalize s")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    table = "\n".join(lines)
    print(table)
    if args.out:
        import lightning
        import mldash

        versions = {"lightning": lightning.__version__, "torch": torch.__version__,
                    "mldash": mldash.__version__}
        for module in ("wandb", "mlflow", "tensorboard"):
            try:
                versions[module] = __import__(module).__version__
            except Exception:
                pass
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        text = (
            "# Lightning logger overhead\n\n"
            f"`python benchmarks/bench_lightning.py --steps {args.steps} --repeats {args.repeats}`: "
            f"a fit of {args.steps} steps, three `self.log` per step, `log_every_n_steps=1`; "
            f"time per step after {WARMUP} warm-up steps, in wall time and in the process's CPU time "
            "(all threads, so background writers count; wandb's separate service process does not), "
            f"median over {args.repeats} interleaved rounds; overhead is CPU time against "
            "`logger=False` in the same round. "
            "`log_metrics+save us`: the logger alone, 2,000 direct calls with four keys, no Trainer, "
            "time on the caller's thread; the next column is the process's CPU time through "
            "`finalize` (background encoding and writing included; wandb's service process "
            "excluded). These two are the least noisy numbers on a busy machine.\n\n"
            f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}, "
            f"Python {platform.python_version()}, load average {load:.1f} at the end, "
            f"{time.strftime('%Y-%m-%d')}.\n"
            f"Versions: {', '.join(f'{k} {v}' for k, v in versions.items())}.\n\n"
            f"{table}\n"
        )
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
