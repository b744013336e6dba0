"""Where a Conv3D classifier looks in a volume: Grad-CAM on synthetic 3-D scans, in TensorBoard.

Each volume is noise with one solid at a random place (a ball, a plate or a
rod: the class) and a class-independent bright dot
(`keras_cam.data.make_volumes`). A small Conv3D network learns the class;
the callback writes, after every epoch, each probe volume as its three
orthogonal slices through the map's peak, overlaid, with the solid
outlined. At the end the script prints the held-out accuracy and the
pointing game: the share of held-out volumes whose map peaks on the solid
(chance: the solid's share of the volume).

Run `python examples/volume_cam.py`, then `tensorboard --logdir runs/volume`
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
        __doc__.splitlines()[0], "runs/volume", train_size=384, test_size=96, samples="volumes"
    )
    parser.add_argument("--size", type=int, default=16, help="side of the cubic volumes")
    return parser.parse_args()


def build_model(size: int, num_classes: int):
    """Average pooling to half size, two Conv3D layers, global average pooling, a softmax head.

    Pooling first keeps training fast: a full-resolution (or strided) Conv3D
    is slow to train on CPU under TensorFlow.
    """
    import keras
    from keras import layers

    inputs = keras.Input((size, size, size, 1))
    x = layers.AveragePooling3D(2)(inputs)
    x = layers.Conv3D(16, 3, padding="same", activation="relu")(x)
    x = layers.Conv3D(16, 3, padding="same", activation="relu", name="last_conv")(x)
    x = layers.GlobalAveragePooling3D()(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="volume_cnn")


def main() -> None:
    args = parse_args()
    # Imported after parsing, so that --help answers at once.
    import keras

    from keras_cam.data import make_volumes

    started = time.perf_counter()
    train = make_volumes(args.train_size, size=args.size, seed=1)
    test = make_volumes(args.test_size, size=args.size, seed=2)
    keras.utils.set_random_seed(0)  # before the model: its initial weights too
    model = build_model(args.size, len(train.class_names))
    train_with_cam(
        model, train, test, args, keras.optimizers.Adam(3e-3), method=["gradcam", "layercam"]
    )
    score_maps(model, test, scored_methods(args), args, started, samples="volumes", target="solid")


if __name__ == "__main__":
    main()
