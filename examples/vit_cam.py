"""A small vision transformer trained from scratch on the synthetic shapes, explained on its tokens.

Run `python examples/vit_cam.py`, then `make tensorboard` (IMAGES tab,
`cam/gradcam/grid`). The ViT reads its class from a class token, as ViT and
DeiT do, so keras_cam explains by default the output of the last block's
first LayerNorm (printed as the layer), reshaped from 64 patch tokens (the
class token dropped) to the 8×8 token grid: there the last attention still
mixes the patch tokens into the class token, while the block's input sees
the score only through that norm, which ignores each token's scale (its
gradient is orthogonal to its activation: an empty or noisy map). At the end
the script prints the held-out accuracy and the pointing game (share of
held-out images whose map peak lies on the object), to compare with the CNN
of `examples/demo.py`, with which it shares its data, training loop and
scoring. The weights are seeded: a run repeats its figures.

The tokens come from a convolutional stem (three stride-2 3×3 convolutions,
Xiao et al. 2021, "Early Convolutions Help Transformers See Better"), not
from the usual linear 8×8 patchify: on 3,000 images and a few CPU minutes a
patchify ViT does not learn the shapes (held-out accuracy about 0.45, chance
0.33), with or without warm-up, cosine decay, clipping and flips/shifts;
most likely it would have to learn each shape at each offset within the
patches from too few examples. The stem gives every token a local,
translation-equivariant view of its 15×15 pixel neighbourhood, and random
flips and shifts stop it from memorising the training set. The map is still
taken from a token tensor, never from the stem. README, "Model kinds", has
the figures this script printed and the variants tried.

The pointing game is also reported for the transformer-native methods, which
read the attention probabilities of both blocks instead of a token map:
attention rollout, gradient-weighted rollout (Chefer et al. 2021) and LeGrad,
and the script says whether gradient rollout > rollout > Grad-CAM, the order
Chefer et al. found on ImageNet segmentation.
"""

from __future__ import annotations

import math
import time

from demo import score_maps, shapes_arguments, shapes_data, train_with_cam

BATCH_SIZE = 32  # train_with_cam's
# Read the attention of both blocks rather than the token map (docs/methods_transformers.md).
ATTENTION_METHODS = ["rollout", "gradrollout", "legrad"]


def build_vit(size: int, num_classes: int, width: int = 64, depth: int = 2):
    """Flips/shifts, conv stem (stride 8), class token, `depth` pre-norm blocks, token head."""
    import keras
    from keras import layers

    class ClassToken(layers.Layer):
        """Prepends a learned class token to the patch tokens."""

        def build(self, input_shape):
            self.token = self.add_weight(shape=(1, 1, input_shape[2]), initializer="zeros")

        def call(self, x):
            batch, _, width = keras.ops.shape(x)
            return keras.ops.concatenate(
                [keras.ops.broadcast_to(self.token, (batch, 1, width)), x], axis=1
            )

    class PositionEmbedding(layers.Layer):
        """Adds a learned position embedding to each token."""

        def build(self, input_shape):
            self.position = self.add_weight(
                shape=(1, input_shape[1], input_shape[2]),
                initializer=keras.initializers.RandomNormal(stddev=0.02),
            )

        def call(self, x):
            return x + self.position

    inputs = keras.Input((size, size, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    # Training only (identity at inference, so the maps see the image as given).
    x = layers.RandomFlip(name="random_flip")(x)
    x = layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", name="random_shift")(x)
    for i, filters in enumerate((width // 4, width // 2, width)):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=f"stem{i}")(x)
        x = layers.BatchNormalization(name=f"stem{i}_norm")(x)
        x = layers.ReLU(name=f"stem{i}_relu")(x)
    x = layers.Reshape((-1, width), name="grid_to_tokens")(x)
    x = layers.Dense(width, name="tokens")(x)
    x = ClassToken(name="class_token")(x)
    x = PositionEmbedding(name="position")(x)
    for i in range(depth):
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm1")(x)
        h = layers.MultiHeadAttention(4, width // 4, name=f"block{i}_attention")(h, h)
        x = layers.Add(name=f"block{i}_mixed")([x, h])
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm2")(x)
        h = layers.Dense(2 * width, activation="gelu", name=f"block{i}_mlp1")(h)
        h = layers.Dense(width, name=f"block{i}_mlp2")(h)
        x = layers.Add(name=f"block{i}_out")([x, h])
    x = layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    # The head reads the class token only. (A mean over the tokens learns as well, but its
    # maps are diffuse: with a mean, spreading the class to every token raises the logit.)
    x = layers.Lambda(lambda tokens: tokens[:, 0], name="class_token_out")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="shapes_vit")


def warmup_cosine_adamw(epochs: int, train_size: int, peak: float = 1e-3):
    """AdamW: linear warm-up over the first 100 steps, then cosine decay; gradients clipped."""
    import keras

    steps = epochs * math.ceil(train_size / BATCH_SIZE)
    warmup = min(100, steps // 2)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, max(steps - warmup, 1), warmup_target=peak, warmup_steps=warmup
    )
    return keras.optimizers.AdamW(schedule, weight_decay=0.05, global_clipnorm=1.0)


def main() -> None:
    args = shapes_arguments(__doc__.splitlines()[0], log_dir="runs/vit", epochs=10)

    import keras

    from keras_cam.data import CLASS_NAMES

    started = time.perf_counter()
    keras.utils.set_random_seed(0)
    model = build_vit(args.size, len(CLASS_NAMES))
    train, test = shapes_data(args)
    train_with_cam(model, train, test, args, warmup_cosine_adamw(args.epochs, len(train.images)))
    methods = ["gradcam", "gradcam++", "layercam", "hirescam", "eigencam"]
    games = score_maps(model, test, [*methods, *ATTENTION_METHODS], args, started)
    ordered = games["gradrollout"] > games["rollout"] > games["gradcam"]
    print(
        f"Chefer et al.'s order (gradient rollout > rollout > Grad-CAM): "
        f"{'shown' if ordered else 'not shown'} here "
        f"({games['gradrollout']:.3f}, {games['rollout']:.3f}, {games['gradcam']:.3f})"
    )


if __name__ == "__main__":
    main()
