"""Decoy benchmark: does CAM-guided training remove a shortcut, or only hide it?

RRR's DecoyMNIST protocol (Ross, Hughes and Doshi-Velez, IJCAI 2017) on data
that is here: scikit-learn's bundled 8×8 digits (1797 images), upsampled to
20×20 and centred on a 28×28 canvas. Each image gets a 4×4 patch in a random
corner. In training the patch's grey level gives the class away
(`255 − 25·y`, as in RRR); in test it is drawn at random, so a model that
learned the patch fails there. The masks mark the object as everything but
the four corner patches (RRR's annotation, inverted: ours mark where the
evidence should be). Every guided run has a mask on every training image.

Reported: test accuracy (patch randomised) trained without patches, with
patches, and with patches under each penalty of `keras_cam.CAMGuidedModel`,
beside RRR's published DecoyMNIST figures (an MLP on MNIST: 0.9611 without
decoys, 0.5155 with, 0.9607 with the RRR penalty).

Run: `.venv/bin/python benchmarks/bench_decoy.py` (any backend; about 2–4
minutes on 2 CPU cores). `--seeds 3` repeats each run with other seeds.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from keras import layers
from PIL import Image

import keras_cam

RRR_PUBLISHED = {"no decoys": 0.9611, "decoys": 0.5155, "decoys + rrr": 0.9607}
CANVAS, DIGIT, PATCH = 28, 20, 4


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8×8 digits as (N, 28, 28) floats in [0, 1], and their labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    offset = (CANVAS - DIGIT) // 2
    images = np.zeros((len(data.images), CANVAS, CANVAS), dtype="float32")
    for i, small in enumerate(data.images):
        big = Image.fromarray((small * 255 / 16).astype("uint8")).resize(
            (DIGIT, DIGIT), Image.BILINEAR
        )
        images[i, offset : offset + DIGIT, offset : offset + DIGIT] = np.asarray(big) / 255
    return images, data.target.astype("int64")


def corners() -> list[tuple[slice, slice]]:
    ends = (slice(0, PATCH), slice(CANVAS - PATCH, CANVAS))
    return [(rows, cols) for rows in ends for cols in ends]


def with_decoys(images: np.ndarray, levels: np.ndarray, seed: int) -> np.ndarray:
    """A copy with one 4×4 patch of grey `levels[i]` in a random corner of each image."""
    rng = np.random.default_rng(seed)
    decoyed = images.copy()
    places = corners()
    for i, corner in enumerate(rng.integers(0, len(places), len(images))):
        decoyed[(i, *places[corner])] = levels[i]
    return decoyed


def object_masks(count: int) -> np.ndarray:
    """Everything but the four corner patches: where the evidence may be."""
    masks = np.ones((count, CANVAS, CANVAS), dtype=bool)
    for corner in corners():
        masks[(slice(None), *corner)] = False
    return masks


def shapes(count: int = 1800) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """keras_cam's shapes (3 classes, textured background) at 28×28, grey, in [0, 1]."""
    from keras_cam.data import make_shapes

    data = make_shapes(count, size=CANVAS, seed=0)
    return data.images.mean(axis=-1).astype("float32") / 255, data.labels, data.masks


def decoy_data(seed: int = 0, dataset: str = "digits") -> dict[str, np.ndarray]:
    """Train/test split with and without decoys (the test decoys' grey levels random)."""
    if dataset == "digits":
        images, labels = digits()
        masks = object_masks(len(images))
    else:
        images, labels, masks = shapes()
        masks = masks & object_masks(len(images))
    classes = int(labels.max()) + 1
    order = np.random.default_rng(seed).permutation(len(images))
    train, test = order[: len(order) * 2 // 3], order[len(order) * 2 // 3 :]
    levels_train = (255 - 25 * labels[train]) / 255
    random_labels = np.random.default_rng(seed + 1).integers(0, classes, len(test))
    levels_test = (255 - 25 * random_labels) / 255
    return {
        "x_clean": images[train][..., None],
        "x_decoy": with_decoys(images[train], levels_train, seed)[..., None],
        "y": labels[train],
        "x_test": with_decoys(images[test], levels_test, seed + 2)[..., None],
        "y_test": labels[test],
        "masks": masks[train],
        "classes": classes,
    }


def cnn(classes: int = 10) -> keras.Model:
    inputs = keras.Input((CANVAS, CANVAS, 1))
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv3")(x)
    # Global max pooling: the digit's strokes and the patch's grey level both reach
    # the head as "is it anywhere", so the patch is as easy to read as in RRR's MLP.
    x = layers.GlobalMaxPooling2D()(x)
    x = layers.Dense(64, activation="relu")(x)
    return keras.Model(inputs, layers.Dense(classes, activation="softmax", name="classifier")(x))


RUNS = {
    "no decoys": {},
    "decoys": {},
    "decoys + rrr": {"penalty": "rrr"},
    "decoys + gradcam": {"penalty": "gradcam", "layer": "conv3"},
    "decoys + gradcam ×3 layers": {"penalty": "gradcam", "layer": ["conv1", "conv2", "conv3"]},
}


def run(name: str, data: dict[str, np.ndarray], seed: int, epochs: int) -> float:
    keras.utils.set_random_seed(seed)
    model = cnn(data["classes"])
    options = RUNS[name]
    x = data["x_clean"] if name == "no decoys" else data["x_decoy"]
    trainee = keras_cam.CAMGuidedModel(model, **options) if options else model
    fed = {"images": x, "masks": data["masks"]} if options else x
    trainee.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    trainee.fit(fed, data["y"], epochs=epochs, batch_size=64, verbose=0)
    predicted = np.argmax(model.predict(data["x_test"], batch_size=256, verbose=0), axis=-1)
    return float(np.mean(predicted == data["y_test"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--data", choices=("digits", "shapes"), default="digits")
    parser.add_argument("--only", nargs="*", default=list(RUNS), help="run names to run")
    args = parser.parse_args()
    print(
        f"keras {keras.__version__}, backend {keras.backend.backend()}; sklearn digits "
        f"on 28×28 with 4×4 corner decoys, {args.epochs} epochs, test accuracy with the "
        f"decoys randomised:"
    )
    data = [decoy_data(seed, args.data) for seed in range(args.seeds)]
    for name in args.only:
        start = time.perf_counter()
        scores = [run(name, data[seed], seed, args.epochs) for seed in range(args.seeds)]
        published = RRR_PUBLISHED.get(name)
        reference = f"   RRR (DecoyMNIST) {published:.4f}" if published else ""
        spread = f" ± {np.std(scores):.3f}" if len(scores) > 1 else ""
        print(
            f"  {name:<28} {np.mean(scores):.3f}{spread}   "
            f"({time.perf_counter() - start:4.0f} s){reference}",
            flush=True,
        )


if __name__ == "__main__":
    main()
