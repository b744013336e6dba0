"""A small vision transformer trained from scratch on the synthetic shapes, explained on its tokens.

Run `python examples/vit_cam.py`, then `tensorboard --logdir runs` (IMAGES tab,
`cam/gradcam`). The ViT's head reads only the class token, so Grad-CAM at the
last block's output would be empty; keras_cam explains the input of the last
block (printed as the layer), reshaped from 1 + 8×8 tokens to the 8×8 patch
grid. At the end the script prints the held-out accuracy and the pointing game
(share of held-out images whose map peak lies on the object), to compare with
the CNN of `examples/demo.py`.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
from keras import layers, ops

import keras_cam
from keras_cam.data import make_shapes
from keras_cam.metrics import pointing_game


class ClassAndPosition(layers.Layer):
    """Prepends a learned class token and adds learned position embeddings."""

    def build(self, input_shape):
        tokens, width = input_shape[1], input_shape[2]
        self.class_token = self.add_weight(shape=(1, 1, width), initializer="zeros")
        self.position = self.add_weight(
            shape=(1, tokens + 1, width), initializer=keras.initializers.RandomNormal(stddev=0.02)
        )

    def call(self, x):
        batch = ops.shape(x)[0]
        return ops.concatenate([ops.tile(self.class_token, (batch, 1, 1)), x], 1) + self.position


def build_vit(size: int, num_classes: int, patch: int = 8, width: int = 64, depth: int = 4):
    """Patchify (Conv2D, stride = patch), class token, `depth` pre-norm blocks, class-token head."""
    inputs = keras.Input((size, size, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = layers.Conv2D(width, patch, strides=patch, name="patchify")(x)
    x = layers.Reshape((-1, width), name="patches")(x)
    x = ClassAndPosition(name="class_and_position")(x)
    for i in range(depth):
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm1")(x)
        h = layers.MultiHeadAttention(4, width // 4, name=f"block{i}_attention")(h, h)
        x = layers.Add(name=f"block{i}_mixed")([x, h])
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm2")(x)
        h = layers.Dense(2 * width, activation="gelu", name=f"block{i}_mlp1")(h)
        h = layers.Dense(width, name=f"block{i}_mlp2")(h)
        x = layers.Add(name=f"block{i}_out")([x, h])
    x = layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="classifier")(x[:, 0])
    return keras.Model(inputs, outputs, name="shapes_vit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-dir", default="runs/vit")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--train-size", type=int, default=3000)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    train = make_shapes(args.train_size, size=args.size, seed=1)
    test = make_shapes(256, size=args.size, seed=2)
    model = build_vit(args.size, len(train.class_names))
    model.compile(
        keras.optimizers.AdamW(1e-3, weight_decay=0.05),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    callback = keras_cam.CAMCallback(
        (test.images[:16], test.labels[:16]),
        os.path.join(args.log_dir, "cam"),
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
    methods = ["gradcam", "gradcam++", "layercam", "hirescam", "eigencam"]
    results = keras_cam.explain(model, test.images, method=methods)
    result = results["gradcam"]
    accuracy = float((result.predicted == test.labels).mean())
    print(f"\ntrained in {time.perf_counter() - started:.0f} s; explained layer {result.layer!r}")
    print(f"held-out accuracy: {accuracy:.3f}")
    print(f"pointing game (map peak on the object), {len(test.images)} held-out images:")
    for name, method_result in results.items():
        print(f"  {name:<12} {pointing_game(method_result.heatmaps, test.masks):.3f}")
    print(f"\nView the maps:  tensorboard --logdir {os.path.dirname(args.log_dir) or '.'}")


if __name__ == "__main__":
    main()
