"""A tiny BERT classifier fine-tuned with the Hugging Face Trainer, tracked with mldash.

    python examples/hf_example.py                # MLDashCallback, explicit settings
    python examples/hf_example.py --report-to    # report_to="mldash", settings from MLDASH_*

Then `mldash ls` / `mldash ui`. The model is built from a config and the data is
synthetic (label = whether token 7 occurs), so nothing is downloaded; about 15 s on a CPU.
"""

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments  # noqa: E402


def make_data(n: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 32, (n, 12), generator=g)
    return [{"input_ids": row, "labels": int((row == 7).any())} for row in ids]


def accuracy(prediction) -> dict:
    logits, labels = prediction
    return {"accuracy": float((logits.argmax(-1) == labels).mean())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--report-to", action="store_true", help='use report_to="mldash" instead of the callback')
    parser.add_argument("--output-dir", default="hf-example-output")
    options = parser.parse_args()

    torch.manual_seed(0)
    config = BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=2)
    model = BertForSequenceClassification(config)

    args = TrainingArguments(
        options.output_dir,
        run_name="tiny-bert",                 # the experiment's name unless one is given
        num_train_epochs=2, per_device_train_batch_size=16, learning_rate=3e-3,
        logging_steps=4, eval_strategy="steps", eval_steps=16,
        save_strategy="steps", save_steps=16, save_total_limit=2,
        metric_for_best_model="accuracy", load_best_model_at_end=True,
        use_cpu=True, disable_tqdm=True,
        report_to="mldash" if options.report_to else "none",
    )
    callbacks = []
    if not options.report_to:
        from mldash.integrations.transformers import MLDashCallback

        callbacks.append(MLDashCallback(project="examples", name="hf-tiny-bert", tags=["bert", "example"]))

    trainer = Trainer(model=model, args=args, train_dataset=make_data(256, 0), eval_dataset=make_data(64, 1),
                      compute_metrics=accuracy, callbacks=callbacks)
    trainer.train()
    print("test metrics:", trainer.predict(make_data(64, 2)).metrics)


if __name__ == "__main__":
    main()
