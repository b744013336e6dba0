"""The main job: train a small CNN on synthetic shapes and watch, in TensorBoard, where it looks.

Run `make demo`, then `make tensorboard` (TensorBoard from the project's venv)
and open http://localhost:6006: `cam/compare` shows Grad-CAM, Layer-CAM and
Score-CAM side by side.
The synthetic images come with object masks, so the script can also score
the final maps of every method on feature maps (the attention methods need a
transformer: see vit_cam.py): the pointing game is the share of held-out
images whose CAM peak falls on the object rather than on the background or
the distractor.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Keras, TensorFlow and keras_cam are imported where they are used, after the command
# line is parsed: `--help` answers at once.


def build_model(size: int, num_classes: int):
    """A small convolutional classifier with a GAP→Dense head."""
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    for filters, pool in ((32, True), (64, True), (64, False)):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        if pool:
            x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="last_conv")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="shapes_cnn")


def shapes_arguments(description: str, log_dir: str, epochs: int) -> argparse.Namespace:
    """The command line shared by the shapes examples (this one and vit_cam.py)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--log-dir", default=log_dir, help="TensorBoard log directory")
    parser.add_argument("--epochs", type=int, default=epochs, help="training epochs")
    parser.add_argument("--train-size", type=int, default=3000, help="training images")
    parser.add_argument("--test-size", type=int, default=256, help="held-out images scored")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    return parser.parse_args()


SCORED_METHODS = (
    "gradcam",
    "gradcam++",
    "xgradcam",
    "layercam",
    "hirescam",
    "eigencam",
    "scorecam",
)


def synthetic_parser(
    description: str, log_dir: str, train_size: int, test_size: int, samples: str
) -> argparse.ArgumentParser:
    """The options shared by the sequence and volume examples; each adds its size option."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--log-dir", default=log_dir, help="TensorBoard log directory")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs")
    parser.add_argument("--train-size", type=int, default=train_size, help=f"training {samples}")
    parser.add_argument("--test-size", type=int, default=test_size, help=f"held-out {samples}")
    parser.add_argument(
        "--methods",
        default="all",
        help=f"comma-separated methods scored by the pointing game at the end: all, or some "
        f"of {', '.join(SCORED_METHODS)}",
    )
    return parser


def scored_methods(args: argparse.Namespace) -> list[str]:
    """The methods named by `--methods`."""
    return list(SCORED_METHODS) if args.methods == "all" else args.methods.split(",")


def shapes_data(args: argparse.Namespace):
    """The training and held-out shapes for `args.train_size` and `args.size`."""
    from keras_cam.data import make_shapes

    return make_shapes(args.train_size, size=args.size, seed=1), make_shapes(
        args.test_size, size=args.size, seed=2
    )


def train_with_cam(model, train, test, args, optimizer, **cam_options) -> None:
    """Trains `model` with TensorBoard and a CAMCallback probing the first 16 held-out samples.

    Shared by the examples on synthetic data (shapes, sequences, volumes),
    whose sets carry `images`, `labels`, `masks` and `class_names`.
    """
    import keras

    import keras_cam

    keras.utils.set_random_seed(0)
    model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
    callbacks = [
        keras.callbacks.TensorBoard(args.log_dir),
        keras_cam.CAMCallback(
            (test.images[:16], test.labels[:16]),
            os.path.join(args.log_dir, "cam"),
            class_names=train.class_names,
            **cam_options,
            watch=keras_cam.WatchOptions(probe_masks=test.masks[:16]),
        ),
    ]
    model.fit(
        train.images,
        train.labels,
        validation_data=(test.images, test.labels),
        epochs=args.epochs,
        batch_size=32,
        callbacks=callbacks,
        verbose=2,
    )


def score_maps(
    model, test, methods, args, started: float, samples: str = "images", target: str = "object"
) -> dict[str, float]:
    """Prints the held-out accuracy, each method's pointing game and how to view the maps.

    Returns each method's pointing game.
    """
    import keras_cam
    from keras_cam.diagnostics.metrics import pointing_game

    results = keras_cam.explain(model, test.images, method=methods)
    first = next(iter(results.values()))
    accuracy = float((first.predicted == test.labels).mean())
    print(f"\ntrained in {time.perf_counter() - started:.0f} s; explained layer {first.layer!r}")
    print(f"held-out accuracy: {accuracy:.3f}")
    print(
        f"pointing game (map peak on the {target}), {len(test.images)} held-out {samples}; "
        f"chance {test.masks.mean():.3f}:"
    )
    games = {
        name: float(pointing_game(method_result.heatmaps, test.masks))
        for name, method_result in sorted(results.items())
    }
    for name, game in games.items():
        print(f"  {name:<12} {game:.3f}")
    log_root = os.path.dirname(args.log_dir) or "."
    tensorboard = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    print(
        f"\nView the maps:  make tensorboard LOGDIR={log_root}\n"
        f"           or:  {tensorboard} --logdir {log_root} "
        f"--samples_per_plugin images={args.epochs}"
    )
    return games


def main() -> None:
    args = shapes_arguments(__doc__.splitlines()[0], log_dir="runs/demo", epochs=10)
    import keras

    import keras_cam
    from keras_cam.data import CLASS_NAMES

    started = time.perf_counter()
    keras.utils.set_random_seed(0)  # before the model: its initial weights too
    model = build_model(args.size, len(CLASS_NAMES))
    train, test = shapes_data(args)
    train_with_cam(
        model,
        train,
        test,
        args,
        keras.optimizers.Adam(2e-3),
        method=["gradcam", "layercam", "scorecam"],
    )
    # SS-CAM and IS-CAM score samples × channels masked inputs per image (35 and 10 times
    # Score-CAM's by default): 2 samples of the 8 strongest channels keep the demo quick.
    # SESS runs Grad-CAM on 122 patches per image at its 12 default scales: 3 scales (9
    # patches) keep it quick.
    from keras_cam.methods import ISCAM, SESS, SSCAM, get_method

    light = [SSCAM(samples=2, max_channels=8), ISCAM(samples=2, max_channels=8), SESS(num_scales=3)]
    # The attention methods (rollout, gradrollout, legrad) read a transformer's blocks: this
    # CNN has none, so they are left to vit_cam.py.
    methods = [
        name
        for name in keras_cam.available_methods()
        if name not in ("sscam", "iscam", "sess") and not get_method(name).uses_attention
    ]
    score_maps(model, test, [*methods, *light], args, started)


if __name__ == "__main__":
    main()
