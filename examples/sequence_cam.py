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

from demo import score_maps, scored_methods, synthetic_parser, train_with_cam

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args() -> argparse.Namespace:
    parser = synthetic_parser(
        __doc__.splitlines()[0],
        "runs/sequence",
        train_size=2000,
        test_size=256,
        samples="sequences",
    )
    parser.add_argument("--length", type=int, default=128, help="time steps per sequence")
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

    from keras_cam.data import make_sequences

    started = time.perf_counter()
    train = make_sequences(args.train_size, length=args.length, seed=1)
    test = make_sequences(args.test_size, length=args.length, seed=2)
    keras.utils.set_random_seed(0)  # before the model: its initial weights too
    model = build_model(args.length, len(train.class_names))
    train_with_cam(
        model, train, test, args, keras.optimizers.Adam(3e-3), method=["gradcam", "layercam"]
    )
    score_maps(
        model, test, scored_methods(args), args, started, samples="sequences", target="pattern"
    )


if __name__ == "__main__":
    main()
