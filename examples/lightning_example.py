"""Train a small classifier with PyTorch Lightning and track it with mldash.

    python examples/lightning_example.py [--root .mldash] [--epochs 5]
    mldash show lightning-demo/<name>     # what was recorded

Runs in well under a minute on a CPU: synthetic data, a two-layer MLP.
Works the same with ``import pytorch_lightning as pl``.
"""

from __future__ import annotations

import argparse
import time

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mldash.integrations.lightning import MLDashLogger


class Spirals(pl.LightningDataModule):
    """Two interleaved spirals: a small problem a linear model cannot solve."""

    def __init__(self, n: int = 2000, noise: float = 0.05, batch_size: int = 64, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()  # recorded too, next to the model's

    def setup(self, stage: str) -> None:
        g = torch.Generator().manual_seed(self.hparams.seed)
        n = self.hparams.n
        t = torch.rand(n, generator=g) * 3 * torch.pi
        label = torch.randint(0, 2, (n,), generator=g)
        angle = t + label * torch.pi
        x = torch.stack([t * torch.cos(angle), t * torch.sin(angle)], dim=1) / 5
        x += self.hparams.noise * torch.randn(n, 2, generator=g)
        cut_train, cut_val = int(0.7 * n), int(0.85 * n)
        self.train_set = TensorDataset(x[:cut_train], label[:cut_train])
        self.val_set = TensorDataset(x[cut_train:cut_val], label[cut_train:cut_val])
        self.test_set = TensorDataset(x[cut_val:], label[cut_val:])

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=256)

    def test_dataloader(self):
        return DataLoader(self.test_set, batch_size=256)


class Classifier(pl.LightningModule):
    def __init__(self, hidden: int = 64, lr: float = 0.03, optimizer: dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, 2))

    def forward(self, x):
        return self.net(x)

    def _step(self, batch, stage: str):
        x, y = batch
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        acc = (logits.argmax(dim=1) == y).float().mean()
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=stage == "val")
        self.log(f"{stage}/acc", acc, on_step=on_step, on_epoch=True, prog_bar=stage == "val")
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.trainer.max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="local root (default $MLDASH_ROOT or .mldash)")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    pl.seed_everything(0, verbose=False)

    logger = MLDashLogger(project="lightning-demo", root=args.root, tags=["example", "spirals"],
                          description="MLP on two spirals")
    checkpoint = ModelCheckpoint(monitor="val/acc", mode="max", save_top_k=2)  # lands in logger.log_dir
    trainer = pl.Trainer(
        max_epochs=args.epochs, logger=logger, log_every_n_steps=5, accelerator="cpu",
        callbacks=[checkpoint, LearningRateMonitor(logging_interval="epoch")],
        enable_model_summary=False,
    )
    model, data = Classifier(optimizer={"name": "adam", "schedule": "cosine"}), Spirals()
    started = time.perf_counter()
    trainer.fit(model, data)
    exp = logger.experiment  # the mldash.Experiment, for anything Lightning does not log
    exp.summary.set(train_runtime=round(time.perf_counter() - started, 2))
    trainer.test(model, data, ckpt_path="best")  # same experiment; COMPLETED again at the end

    best = exp.best_checkpoint
    print(f"\nexperiment {exp.prefix}: {exp.status}, stored in {exp.path}")
    print(f"metrics:    {', '.join(exp.metric_names())}")
    print(f"best:       {best['path']} ({best['monitor']}={best['score']:.3f}, epoch {best['epoch']})")
    print(f"look at it: mldash show {exp.prefix} --root {exp.root}")


if __name__ == "__main__":
    main()
