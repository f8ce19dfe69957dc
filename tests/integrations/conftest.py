"""Real frameworks training tiny models (built from configs, on synthetic data).

What every integration promises is in test_all.py; each framework's own details
in its file. The frameworks' quiet, offline settings are made here, before any
of them is imported.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
