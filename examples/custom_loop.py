"""A tiny regression model trained in a plain PyTorch loop, tracked with mldash.

    python examples/custom_loop.py          # then: mldash ls / mldash ui
"""

import argparse
from dataclasses import asdict, dataclass

import torch
from torch import nn

import mldash


@dataclass
class Config:
    learning_rate: float = 0.05
    batch_size: int = 32
    epochs: int = 20
    hidden: int = 16


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prefix", help="project/name; default: a new run in project 'examples'")
    args = parser.parse_args()
    config = Config()
    torch.manual_seed(0)

    # y = 3x + 1 with noise: enough to watch a loss curve fall.
    x = torch.rand(512, 1)
    y = 3 * x + 1 + 0.05 * torch.randn_like(x)
    model = nn.Sequential(nn.Linear(1, config.hidden), nn.Tanh(), nn.Linear(config.hidden, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=config.learning_rate)

    experiment = mldash.Experiment(
        args.prefix, project=None if args.prefix else "examples", description="custom loop example", tags=["example"]
    )
    with experiment:
        experiment.params.set(**asdict(config))
        experiment.params.set(**{"model": {"architecture": "mlp", "parameters": sum(p.numel() for p in model.parameters())}})
        experiment.log("Training started")
        step = 0
        for epoch in range(config.epochs):
            batch = []
            for i in range(0, len(x), config.batch_size):
                xb, yb = x[i : i + config.batch_size], y[i : i + config.batch_size]
                loss = nn.functional.mse_loss(model(xb), yb)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                # a tensor goes in as it is: mldash reads it on its writer thread
                experiment.metrics("train/loss").append(value=loss.detach(), step=step, epoch=epoch)
                batch.append({"value": optimizer.param_groups[0]["lr"], "step": step})
                step += 1
            experiment.metrics("train/lr").append_batch(batch)
            with torch.no_grad():
                val_loss = nn.functional.mse_loss(model(x), y).item()
            experiment.metrics("val/loss").append(value=val_loss, step=step, epoch=epoch)
            experiment.log(f"Epoch {epoch + 1} complete", metadata={"val_loss": val_loss, "epoch": epoch})
        print(f"done: {experiment.prefix} in {experiment.path} (val_loss={val_loss:.4f})")


if __name__ == "__main__":
    main()
