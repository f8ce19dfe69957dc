"""Tiny Lightning models and data for tests/integrations/test_lightning.py, for either Lightning package.

Also a script for the runs that need their own process:
``python tests/_lightning_support.py ddp ROOT``, ``... sigterm ROOT``, ``... nodes ROOT``
(one process of a two-node run, started by torchrun) and
``... cli:PACKAGE ROOT ARGS...`` (LightningCLI).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

PACKAGES = ("lightning.pytorch", "pytorch_lightning")


def data(n: int = 32, batch_size: int = 8, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x.sum(dim=1, keepdim=True)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def classes(package: str = "lightning.pytorch"):
    """(TinyModule, TinyData) built on ``package``'s LightningModule and LightningDataModule."""
    pl = importlib.import_module(package)

    class TinyModule(pl.LightningModule):
        """A linear regressor; ``fail_in``/``fail_at`` raise in that hook at that global step."""

        def __init__(self, lr: float = 0.05, fail_in: str | None = None, fail_at: int = 0,
                     sigterm_at: int | None = None, **extra):
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(4, 1)

        def _maybe_fail(self, hook: str) -> None:
            if self.hparams.fail_in == hook and self.global_step >= self.hparams.fail_at:
                raise RuntimeError(f"boom in {hook} at step {self.global_step}")

        def forward(self, x):
            return self.layer(x)

        def training_step(self, batch, batch_idx):
            self._maybe_fail("training_step")
            if self.hparams.sigterm_at is not None and self.global_step == self.hparams.sigterm_at:
                os.kill(os.getpid(), signal.SIGTERM)
            x, y = batch
            loss = torch.nn.functional.mse_loss(self(x), y)
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            self.log("lr_seen", self.hparams.lr)
            return loss

        def validation_step(self, batch, batch_idx):
            self._maybe_fail("validation_step")
            x, y = batch
            loss = torch.nn.functional.mse_loss(self(x), y)
            self.log("val_loss", loss)
            self.log("val_step_loss", loss, on_step=True, on_epoch=False)

        def on_validation_epoch_end(self):
            self._maybe_fail("on_validation_epoch_end")

        def test_step(self, batch, batch_idx):
            x, y = batch
            self.log("test_loss", torch.nn.functional.mse_loss(self(x), y))

        def configure_optimizers(self):
            self._maybe_fail("configure_optimizers")
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    class TinyData(pl.LightningDataModule):
        def __init__(self, batch_size: int = 8, n: int = 32):
            super().__init__()
            self.save_hyperparameters()

        def train_dataloader(self):
            return data(self.hparams.n, self.hparams.batch_size)

        def val_dataloader(self):
            return data(16, self.hparams.batch_size, seed=1)

        def test_dataloader(self):
            return data(16, self.hparams.batch_size, seed=2)

    return TinyModule, TinyData


def trainer(package: str = "lightning.pytorch", **kwargs):
    """A quiet CPU Trainer with small defaults; ``kwargs`` override them."""
    pl = importlib.import_module(package)
    settings = dict(accelerator="cpu", devices=1, max_epochs=2, log_every_n_steps=1,
                    enable_progress_bar=False, enable_model_summary=False)
    settings.update(kwargs)
    return pl.Trainer(**settings)


def cli(package: str, args: list[str]) -> None:
    """LightningCLI of ``package`` over TinyModule/TinyData, as a user's script runs it."""
    module = importlib.import_module(f"{package}.cli")
    TinyModule, TinyData = classes(package)
    module.LightningCLI(TinyModule, TinyData, args=args, save_config_kwargs=None)


def _main(mode: str, root: str) -> None:
    from mldash.integrations.lightning import MLDashLogger

    TinyModule, TinyData = classes()
    if mode == "ddp":
        # No name: every rank builds a logger, only rank zero may create anything.
        logger = MLDashLogger(project="ddp", root=root)
        callbacks = [importlib.import_module("lightning.pytorch.callbacks").ModelCheckpoint(monitor="val_loss")]
        t = trainer(strategy="ddp", devices=2, logger=logger, callbacks=callbacks)
        t.fit(TinyModule(), TinyData())
        t.test(TinyModule(), TinyData())
    elif mode == "nodes":  # torchrun --nnodes=2: a named run, so every rank knows it
        logger = MLDashLogger("nodes/run", root=root)
        trainer(strategy="ddp", num_nodes=2, logger=logger, max_epochs=1).fit(TinyModule(), TinyData())
    elif mode == "sigterm":
        logger = MLDashLogger("sig/run", root=root)
        on_exception = importlib.import_module("lightning.pytorch.callbacks").OnExceptionCheckpoint(root)
        t = trainer(logger=logger, max_epochs=50, callbacks=[on_exception])
        t.fit(TinyModule(sigterm_at=3), TinyData())
        print("fit returned after SIGTERM", flush=True)
    elif mode.startswith("cli:"):  # cli:PACKAGE ROOT ARGS...: a fresh process, as from a shell
        cli(mode[4:], sys.argv[3:])
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
