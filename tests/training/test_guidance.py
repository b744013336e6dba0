"""CAM-guided fine-tuning: the penalty's gradient, as applied by the compiled train step,
against finite differences of an independent numpy computation of the same loss."""

import keras
import numpy as np
import pytest
from keras import layers

import keras_cam
from keras_cam.training.guidance import energy_outside_mask

# Per spatial rank: input size (pooled by 2 to the target map), conv, pooling, global pooling.
KINDS = {
    1: ((8,), layers.Conv1D, layers.AveragePooling1D, layers.GlobalAveragePooling1D),
    2: ((8, 8), layers.Conv2D, layers.AveragePooling2D, layers.GlobalAveragePooling2D),
    3: ((4, 4, 4), layers.Conv3D, layers.AveragePooling3D, layers.GlobalAveragePooling3D),
}


def tiny_model(rank=2):
    """Conv → pool → target conv → GAP → Dense: Grad-CAM has a closed form here."""
    size, conv, pool, global_pool = KINDS[rank]
    inputs = keras.Input((*size, 3))
    x = conv(4, 3, padding="same", activation="tanh", name="conv1")(inputs)
    x = pool(2)(x)
    x = conv(5, 3, padding="same", activation="softplus", name="target")(x)
    x = global_pool()(x)
    outputs = layers.Dense(3, activation="softmax", name="dense")(x)
    return keras.Model(inputs, outputs)


def batch(rank=2):
    size = KINDS[rank][0]
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (6, *size, 3)).astype("float32")
    labels = np.array([0, 1, 2, 0, 1, 2])
    masks = np.zeros((6, *size), dtype="float32")
    for image in (0, 1, 2, 4):  # images 3 and 5 have no annotation: no penalty
        box = []
        for length in size:
            low = rng.integers(0, length - 1)
            box.append(slice(low, rng.integers(low + 1, length + 1)))
        masks[(image, *box)] = 1
    return images, labels, masks


def numpy_penalty(model, features, images, labels, masks):
    """The guidance term from the target layer's activations and the Dense kernel alone.

    With a GAP→Dense head, ∂logit_k/∂A_c = W[c, k] / (cells of the map), so the Grad-CAM
    weight of channel c is W[c, k] / cells: no autodiff involved.
    """
    activations = np.asarray(features(images), dtype=np.float64)
    kernel = np.asarray(model.get_layer("dense").get_weights()[0], dtype=np.float64)
    count, *map_size, _ = activations.shape
    weights = kernel[:, labels].T / np.prod(map_size)  # (N, C)
    signed = np.einsum("n...c,nc->n...", activations, weights)
    # Each map cell covers 2 mask entries per axis: its share inside is their mean.
    pairs = [length for cell in map_size for length in (cell, 2)]
    inside = masks.reshape(count, *pairs).mean(axis=tuple(range(2, 2 * len(map_size) + 1, 2)))
    cells = tuple(range(1, signed.ndim))
    evidence = np.abs(signed).sum(axis=cells) + 1e-7
    share = 1 - (np.maximum(signed, 0) * inside).sum(axis=cells) / evidence
    annotated = masks.reshape(count, -1).max(axis=1) > 0
    return share[annotated].mean()


def test_penalty_in_closed_form():
    activations = keras.ops.ones((1, 2, 2, 1))
    gradients = keras.ops.convert_to_tensor(np.full((1, 2, 2, 1), -1.0, dtype="float32"))
    masks = keras.ops.zeros((1, 4, 4))
    # A map with no positive evidence has nothing on the object: the full penalty.
    assert float(energy_outside_mask(activations, gradients, masks)[0]) == 1.0
    with pytest.raises(ValueError, match=r"masks are 3×3 but the model's input is 4×4"):
        energy_outside_mask(activations, -gradients, keras.ops.zeros((1, 3, 3)), (4, 4))
    sequence = keras.ops.ones((2, 4, 3))  # a Conv1D layer's (N, t, C) activations
    with pytest.raises(ValueError, match=r"must be \(N, T\) .*got masks of shape \(N, 8, 8\)"):
        energy_outside_mask(sequence, sequence, keras.ops.zeros((2, 8, 8)))


@pytest.mark.slow
def test_masks_of_another_rank_than_the_map_are_refused_before_training():
    images, labels, masks = batch(3)
    guided = keras_cam.CAMGuidedModel(tiny_model(3), layer="target", penalty="gradcam")
    guided.compile("sgd", "sparse_categorical_crossentropy")
    before = [w.copy() for w in guided.get_weights()]
    with pytest.raises(
        ValueError, match=r"must be \(N, D, H, W\) .*got masks of shape \(N, 4, 4\)"
    ):
        guided.fit({"images": images, "masks": masks[:, 0]}, labels, epochs=1, verbose=0)
    for kept, weights in zip(before, guided.get_weights(), strict=True):
        np.testing.assert_array_equal(kept, weights)  # no step was taken


# The ranks share every backend-specific line (the double backprop): 2-D runs on every
# backend, 1-D and 3-D in the TensorFlow pass.
@pytest.mark.parametrize(
    "rank",
    [
        pytest.param(1, id="sequence", marks=pytest.mark.slow),
        pytest.param(2, id="image"),
        pytest.param(3, id="volume", marks=pytest.mark.slow),
    ],
)
def test_train_step_applies_the_finite_difference_gradient_of_the_guidance_term(rank):
    """Double backprop inside the compiled train step."""
    images, labels, masks = batch(rank)
    model = tiny_model(rank)
    weight = 20.0  # the term moves the weights little: a large λ lifts it above rounding
    guided = keras_cam.CAMGuidedModel(model, layer="target", weight=weight, penalty="gradcam")
    # A zero data loss isolates the guidance term; SGD(1) makes the update the gradient.
    guided.compile(keras.optimizers.SGD(1.0), lambda y_true, y_pred: 0.0 * keras.ops.sum(y_pred))
    before = [np.asarray(w, dtype=np.float64) for w in model.get_weights()]
    target = keras.Model(model.input, model.get_layer("target").output)

    def features(x):
        return keras.ops.convert_to_numpy(target(x, training=False))

    penalty = numpy_penalty(model, features, images, labels, masks)
    assert 0.1 < penalty < 0.99  # neither trivial nor saturated
    history = guided.fit(
        {"images": images, "masks": masks}, labels, batch_size=6, epochs=1, verbose=0
    )
    assert history.history["cam_guidance"][0] == pytest.approx(penalty, rel=1e-4)
    applied = [b - np.asarray(a) for b, a in zip(before, model.get_weights(), strict=True)]

    rng = np.random.default_rng(1)
    step = 1e-3
    checked = 0
    for index, gradient in enumerate(applied):
        direction = rng.normal(size=gradient.shape)
        direction /= np.linalg.norm(direction)
        values = []
        for sign in (1, -1):
            shifted = [w.copy() for w in before]
            shifted[index] = before[index] + sign * step * direction
            model.set_weights([w.astype("float32") for w in shifted])
            values.append(weight * numpy_penalty(model, features, images, labels, masks))
        finite_difference = (values[0] - values[1]) / (2 * step)
        assert float(np.sum(gradient * direction)) == pytest.approx(
            finite_difference, rel=3e-2, abs=2e-4
        )
        checked += abs(finite_difference) > 1e-3
    assert checked >= 3  # the penalty moves most weights, not only the head's


def small_cnn(size):
    inputs = keras.Input((size, size, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="target")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(3, activation="softmax")(x))


@pytest.mark.slow
def test_guidance_lowers_the_energy_outside_the_masks_when_a_stamp_gives_the_label_away():
    """Same data, same initial weights; only λ differs. What is measured is the term itself
    on the annotated training images. Trained from scratch for 3 epochs the effect is small
    (0.93 → 0.88 here); the fine-tuning case, where it is large, is the shortcut example's
    phase 3b (README).
    """
    from keras_cam.data import add_watermark, make_shapes

    train = make_shapes(384, size=32, seed=1)
    shortcut = add_watermark(train.images, train.labels)  # the stamp's colour is the label
    annotated = np.random.default_rng(0).random(len(train.labels)) < 0.25
    outside = {}
    for weight in (0.0, 1.0):
        keras.utils.set_random_seed(3)
        trainee = keras_cam.CAMGuidedModel(
            small_cnn(32), layer="target", weight=weight, penalty="gradcam"
        )
        trainee.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
        history = trainee.fit(
            {"images": shortcut, "masks": train.masks & annotated[:, None, None]},
            train.labels,
            epochs=3,
            batch_size=32,
            verbose=0,
        )
        outside[weight] = history.history["cam_guidance"][-1]
    assert outside[0.0] > 0.8  # unguided, the map sits mostly off the object
    assert outside[1.0] < outside[0.0] - 0.02, outside
