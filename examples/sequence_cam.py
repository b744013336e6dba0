"""Where a Conv1D classifier looks in time: Grad-CAM on synthetic sequences, live in TensorBoard.

Each sequence is noise with one pattern at a random time (a bump, a flat
pulse or a chirp: the class) and a class-independent downward spike
(`keras_cam.data.make_sequences`). A small Conv1D network learns the class;
the callback writes, after every epoch, each probe sequence as a line plot
over its map (a coloured band along time, the pattern's span bracketed).
At the end the script prints the held-out accuracy and the pointing game:
the share of held-out sequences whose map peaks on the pattern (chance: the
pattern's share of the time axis).

Run `python examples/sequence_cam.py`, then `tensorboard --logdir runs/sequence`
(IMAGES tab: `cam/gradcam/grid`, `cam/compare`).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--log-dir", default="runs/sequence", help="TensorBoard log directory")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs")
    parser.add_argument("--train-size", type=int, default=2000, help="training sequences")
    parser.add_argument("--test-size", type=int, default=256, help="held-out sequences")
    parser.add_argument("--length", type=int, default=128, help="time steps per sequence")
    parser.add_argument(
        "--methods",
        default="all",
        help=f"comma-separated methods scored by the pointing game at the end: all, or some "
        f"of {', '.join(METHODS)}",
    )
    return parser.parse_args()


def build_model(length: int, num_classes: int):
    """Three Conv1D layers (two poolings), global average pooling, a softmax head."""
    import keras
    from keras import layers

    inputs = keras.Input((length, 1))
    x = layers.Conv1D(16, 5, padding="same", activation="relu")(inputs)
    x = layers.MaxPooling1D()(x)
    x = layers.Conv1D(32, 5, padding="same", activation="relu")(x)
    x = layers.MaxPooling1D()(x)
    x = layers.Conv1D(32, 3, padding="same", activation="relu", name="last_conv")(x)
    x = layers.GlobalAveragePooling1D()(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="sequence_cnn")


def main() -> None:
    args = parse_args()
    # Imported after parsing, so that --help answers at once.
    import keras

    import keras_cam
    from keras_cam.data import make_sequences
    from keras_cam.metrics import pointing_game

    keras.utils.set_random_seed(0)
    train = make_sequences(args.train_size, length=args.length, seed=1)
    test = make_sequences(args.test_size, length=args.length, seed=2)
    model = build_model(args.length, len(train.class_names))
    model.compile(
        keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    callback = keras_cam.CAMCallback(
        (test.images[:16], test.labels[:16]),
        os.path.join(args.log_dir, "cam"),
        method=["gradcam", "layercam"],
        class_names=train.class_names,
        probe_masks=test.masks[:16],
    )
    started = time.perf_counter()
    model.fit(
        train.images,
        train.labels,
        validation_data=(test.images, test.labels),
        epochs=args.epochs,
        batch_size=32,
        callbacks=[keras.callbacks.TensorBoard(args.log_dir), callback],
        verbose=2,
    )
    methods = list(METHODS) if args.methods == "all" else args.methods.split(",")
    results = keras_cam.explain(model, test.images, method=methods)
    accuracy = float((next(iter(results.values())).predicted == test.labels).mean())
    print(f"\ntrained in {time.perf_counter() - started:.0f} s")
    print(f"held-out accuracy: {accuracy:.3f}")
    print(
        f"pointing game (map peak on the pattern), {len(test.images)} held-out sequences; "
        f"chance {test.masks.mean():.3f}:"
    )
    for name, result in results.items():
        print(f"  {name:<12} {pointing_game(result.heatmaps, test.masks):.3f}")
    print(f"\nView the maps:  tensorboard --logdir {args.log_dir}")


if __name__ == "__main__":
    main()
