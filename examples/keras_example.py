"""Track a Keras 3 fit with mldash, on any backend.

    KERAS_BACKEND=torch python examples/keras_example.py        # or jax, tensorflow
    mldash show keras-example/spirals                           # what was recorded

A small MLP learns to separate two interleaved spirals (synthetic, no download).
The callback records the fit's hyperparameters, the epoch metrics with their
``val_`` counterparts, the batch metrics every 20 batches and the learning rate
of the cosine schedule. Runs in well under a minute on a laptop CPU.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# A model this small trains fastest on one CPU thread (torch's default thread
# pool mostly spins on a busy 2-core machine).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from mldash.integrations.keras import MLDashCallback  # noqa: E402


def spirals(n: int, noise: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.random(n)) * 3 * np.pi
    label = rng.integers(0, 2, n)
    sign = np.where(label == 1, 1.0, -1.0)
    x = np.stack([sign * t * np.cos(t), sign * t * np.sin(t)], axis=1) / (3 * np.pi)
    x += rng.normal(scale=noise / 3, size=x.shape)
    return x.astype("float32"), label.astype("float32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--root", default=None, help="mldash root (default $MLDASH_ROOT or .mldash)")
    parser.add_argument("--name", default="spirals")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    x, y = spirals(3000)
    x_val, y_val = spirals(1000, seed=1)

    steps = args.epochs * int(np.ceil(len(x) / args.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=steps, alpha=0.05)
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ],
        name="spiral_mlp",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )

    callback = MLDashCallback(
        project="keras-example",
        name=args.name,
        root=args.root,
        description=f"spirals MLP on the {keras.backend.backend()} backend",
        tags=["example", keras.backend.backend()],
        log_every_n_batches=20,
    )
    model.fit(
        x, y,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(x_val, y_val),
        callbacks=[callback],
        verbose=2,
    )

    exp = callback.experiment
    val = exp.metrics("val_accuracy").read()["data"]
    print(f"\n{exp.prefix}: {exp.status}, final val_accuracy {val[-1]['data']['value']:.3f}")
    print(f"stored in {exp.path}")
    print(f"see it with: mldash show {exp.prefix}" + (f" --root {args.root}" if args.root else ""))


if __name__ == "__main__":
    main()
