"""The lab's own Keras recipe, as a benchmark baseline (NOT part of cnnlab).

Runs in a separate virtual environment that has TensorFlow/Keras:

    python -m venv .venv-keras && .venv-keras/bin/pip install tensorflow-cpu keras scipy
    .venv-keras/bin/python benchmarks/keras_lab_baseline.py --model basenet --epochs 50 --seeds 1 2 3

It reproduces the lab's notebook: uint8 → float [0, 1], a shuffled 10 % hold-out,
`ImageDataGenerator` (feature-wise normalisation + rotation 10°, shifts 20 %, flip,
nearest fill when --augment), Adam defaults, batch 64. Prints per-epoch times and test
results and writes benchmarks/results/keras_<model>[_aug].json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import keras  # noqa: E402
from keras import layers  # noqa: E402
try:  # Keras 3 keeps the lab's ImageDataGenerator under its tf.keras-compatible namespace
    from keras.preprocessing.image import ImageDataGenerator  # noqa: E402
except ImportError:
    from keras._tf_keras.keras.preprocessing.image import ImageDataGenerator  # noqa: E402

HERE = Path(__file__).resolve().parent


def basenet(num_classes: int) -> keras.Model:
    return keras.Sequential([
        keras.Input((32, 32, 3)),
        layers.Conv2D(6, 5, activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(16, 5, activation="relu"), layers.MaxPooling2D(2),
        layers.Flatten(), layers.Dense(50, activation="relu"), layers.Dense(num_classes, activation="softmax")])


def basenet_pp(num_classes: int) -> keras.Model:
    return keras.Sequential([
        keras.Input((32, 32, 3)),
        layers.Conv2D(128, 3, padding="same", activation="relu"), layers.BatchNormalization(),
        layers.Conv2D(128, 3, activation="relu"), layers.BatchNormalization(), layers.MaxPooling2D(2),
        layers.Conv2D(64, 5, activation="relu"), layers.BatchNormalization(), layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(256, activation="relu"), layers.Dropout(0.25),
        layers.Dense(128, activation="relu"), layers.Dropout(0.25),
        layers.Dense(64, activation="relu"), layers.Dropout(0.25),
        layers.Dense(num_classes, activation="softmax")])


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.tick = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):  # validation is included, as in the figures
        self.times.append(time.perf_counter() - self.tick)


def run(args, seed: int) -> dict:
    keras.utils.set_random_seed(seed)
    data = np.load(Path(args.data) / "train.npz")
    test = np.load(Path(args.data) / "test.npz")
    x, y = data["images"].astype("float32") / 255.0, data["labels"]
    x_test, y_test = test["images"].astype("float32") / 255.0, test["labels"]
    num_classes = int(y.max()) + 1
    order = np.random.default_rng(0).permutation(len(x))
    n_val = len(x) // 10
    x_val, y_val, x_fit, y_fit = x[order[:n_val]], y[order[:n_val]], x[order[n_val:]], y[order[n_val:]]
    if args.train_limit:
        x_fit, y_fit = x_fit[:args.train_limit], y_fit[:args.train_limit]
    one_hot = lambda v: keras.utils.to_categorical(v, num_classes)  # noqa: E731
    if args.augment:
        train_gen = ImageDataGenerator(featurewise_center=True, featurewise_std_normalization=True,
                                       rotation_range=10, width_shift_range=0.2, height_shift_range=0.2,
                                       horizontal_flip=True, fill_mode="nearest")
        eval_gen = ImageDataGenerator(featurewise_center=True, featurewise_std_normalization=True)
        train_gen.fit(x_fit)
        eval_gen.mean, eval_gen.std = train_gen.mean, train_gen.std
    else:
        train_gen = eval_gen = ImageDataGenerator()
    model = (basenet_pp if args.model == "basenet_pp" else basenet)(num_classes)
    model.compile(optimizer=keras.optimizers.Adam(), loss="categorical_crossentropy", metrics=["accuracy"])
    timer = EpochTimer()
    hist = model.fit(train_gen.flow(x_fit, one_hot(y_fit), batch_size=64, seed=seed),
                     validation_data=eval_gen.flow(x_val, one_hot(y_val), batch_size=64, shuffle=False),
                     epochs=args.epochs, verbose=0, callbacks=[timer])
    loss, acc = model.evaluate(eval_gen.flow(x_test, one_hot(y_test), batch_size=64, shuffle=False), verbose=0)
    return {"seed": seed, "test_loss": float(loss), "test_acc": float(acc), "epoch_times_s": timer.times,
            "median_epoch_time_s": statistics.median(timer.times[1:] or timer.times),
            "final_train_acc": float(hist.history["accuracy"][-1]), "final_val_acc": float(hist.history["val_accuracy"][-1])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("basenet", "basenet_pp"), default="basenet")
    ap.add_argument("--augment", action="store_true")
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--train-limit", type=int, default=0, help="use only the first N training images")
    ap.add_argument("--data", default=str(HERE.parents[1] / "shared" / "data" / "cifar100-subset25"))
    args = ap.parse_args()
    runs = [run(args, s) for s in args.seeds]
    for r in runs:
        print(f"seed {r['seed']}: test acc {100 * r['test_acc']:.2f} %  loss {r['test_loss']:.4f}  "
              f"train acc {100 * r['final_train_acc']:.1f} %  {r['median_epoch_time_s']:.2f} s/epoch (median)")
    accs = [r["test_acc"] for r in runs]
    print(f"mean test acc {100 * statistics.fmean(accs):.2f} %")
    name = f"keras_{args.model}{'_aug' if args.augment else ''}{f'_n{args.train_limit}' if args.train_limit else ''}"
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{name}.json").write_text(json.dumps({"args": vars(args), "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
