"""Reading a Hugging Face Trainer's arguments and model for the callback
(``transformers.py``): hyperparameters, the monitored metric, run names."""

from __future__ import annotations

import re
from typing import Any


def monitor_key(args) -> str | None:
    monitor = getattr(args, "metric_for_best_model", None)
    if not monitor:
        return None
    return monitor if monitor.startswith("eval_") else f"eval_{monitor}"


_UNSAFE = re.compile(r"[^\w.@+=,-]+")


def safe_part(text: str) -> str:
    part = _UNSAFE.sub("-", str(text)).strip("-. ")[:200]
    return part or "run"


def split_run_name(run_name: str) -> tuple[str | None, str]:
    """``"sweep/lr-1e-4"`` -> folder "sweep", name "lr-1e-4"; odd characters become "-"."""
    parts = [p for p in str(run_name).split("/") if p.strip() not in ("", ".", "..")]
    parts = [safe_part(p) for p in parts] or ["run"]
    return ("/".join(parts[:-1]) or None), parts[-1]


def hyperparameters(args, state, model) -> dict:
    """Every TrainingArguments field, the model (and PEFT) config and parameter counts."""
    values: dict[str, Any] = {"args": args.to_dict()}
    if model is not None:
        info: dict[str, Any] = {"class": f"{type(model).__module__}.{type(model).__qualname__}"}
        config = getattr(model, "config", None)
        if config is not None:
            info["config"] = config if isinstance(config, dict) else config.to_dict()
        total, trainable = _count_parameters(model)
        if total is not None:
            info["num_parameters"] = total
            info["num_trainable_parameters"] = trainable
        values["model"] = info
        peft = getattr(model, "peft_config", None)
        if peft:
            values["peft"] = {
                adapter: cfg.to_dict() if hasattr(cfg, "to_dict") else cfg
                for adapter, cfg in (peft.items() if isinstance(peft, dict) else [("default", peft)])
            }
    if state.is_hyper_param_search and state.trial_params:
        values["trial"] = dict(state.trial_params)
    return values


def _count_parameters(model) -> tuple[int | None, int | None]:
    parameters = getattr(model, "parameters", None)
    if not callable(parameters):
        return None, None
    total = trainable = 0
    for p in parameters():
        n = getattr(p, "ds_numel", None) or p.numel()  # DeepSpeed ZeRO-3 keeps shards
        total += n
        if p.requires_grad:
            trainable += n
    return total, trainable
