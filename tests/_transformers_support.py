"""Tiny Hugging Face models and data for tests/integrations/test_transformers.py (no hub access).

Also the scripts for runs that need their own process; they never import mldash:
``python tests/_transformers_support.py report_to OUT`` and ``... ddp OUT`` (under torchrun).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402


def tiny_model(seed: int = 0, **config):
    """A 1-layer BERT classifier built from a config: ~5k parameters, trains in milliseconds."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    values = dict(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16, num_labels=2,
    )
    values.update(config)
    return BertForSequenceClassification(BertConfig(**values))


def dataset(n: int = 32, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [
        {"input_ids": torch.randint(0, 50, (8,), generator=g), "labels": int(i % 2)} for i in range(n)
    ]


def training_args(output_dir, **overrides):
    """Fast CPU TrainingArguments: log every step, no saving unless asked."""
    from transformers import TrainingArguments

    values = dict(
        max_steps=4, logging_steps=1, per_device_train_batch_size=4, per_device_eval_batch_size=8,
        use_cpu=True, disable_tqdm=True, report_to="none", save_strategy="no", seed=0,
        dataloader_num_workers=0,
    )
    values.update(overrides)
    return TrainingArguments(str(output_dir), **values)


def _report_to(out: str) -> None:
    # Configured only through MLDASH_* variables; mldash must load by itself.
    assert "mldash" not in sys.modules, "mldash was imported at start-up"
    from transformers import Trainer
    from transformers.integrations import INTEGRATION_TO_CALLBACK

    print("registered:", "mldash" in INTEGRATION_TO_CALLBACK)
    print("all:", "mldash" in training_args(out, report_to="all").report_to)
    trainer = Trainer(
        model=tiny_model(), args=training_args(out, report_to="mldash", run_name="ignored-by-env-name"),
        train_dataset=dataset(),
    )
    print("callbacks:", [type(cb).__name__ for cb in trainer.callback_handler.callbacks])
    trainer.train()


def _ddp(out: str) -> None:
    from transformers import Trainer

    from mldash.integrations.transformers import MLDashCallback

    callback = MLDashCallback(project="ddp", name="run")
    args = training_args(out, ddp_backend="gloo", save_strategy="steps", save_steps=2)
    trainer = Trainer(model=tiny_model(), args=args, train_dataset=dataset(), callbacks=[callback])
    trainer.train()
    print(f"rank {args.process_index} world {args.world_size} experiment {callback.experiment is not None}")


if __name__ == "__main__":
    {"report_to": _report_to, "ddp": _ddp}[sys.argv[1]](sys.argv[2])
