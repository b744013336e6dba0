"""The mask rule, and CAMGuidedModel's penalties against float64 numpy references."""

import keras
import numpy as np
import pytest
from keras import layers

import keras_cam
from keras_cam.diagnostics.metrics import binary_masks, energy_in_mask, pointing_game
from keras_cam.training.guidance import energy_outside_mask


def test_one_mask_rule():
    assert binary_masks(np.array([True, False])).tolist() == [True, False]
    assert binary_masks(np.array([0, 255], dtype="uint8")).tolist() == [False, True]
    assert binary_masks(np.array([0, 1], dtype="int64")).tolist() == [False, True]
    assert binary_masks(np.array([0.0, 0.49, 0.5, 1.0])).tolist() == [False, False, True, True]
    for bad, message in (
        (np.array([0, 128, 255], dtype="uint8"), r"integers with the values \[128\]"),
        (np.array([0.0, 255.0]), r"floats from 0 to 255; divide 0/255 masks by 255"),
        (np.array([-0.1, 0.5]), r"floats from -0.1 to 0.5"),
        (np.array([np.nan, 0.5]), r"NaN or inf"),
        (np.array(["a"]), r"dtype <U1"),
    ):
        with pytest.raises(ValueError, match=message):
            binary_masks(bad)


def test_soft_masks_are_thresholded_not_read_as_nonzero():
    yy, xx = np.mgrid[:64, :64]
    heat = np.exp(-((yy - 50) ** 2 + (xx - 50) ** 2) / 20.0)[None]  # looks at (50, 50)
    soft = np.exp(-((yy - 12) ** 2 + (xx - 12) ** 2) / 30.0)[None]  # object at (12, 12)
    assert energy_in_mask(heat, soft) == energy_in_mask(heat, soft >= 0.5) < 1e-6
    assert pointing_game(heat, soft) == 0.0
    with pytest.raises(ValueError, match="masks must be booleans"):
        energy_in_mask(heat, soft * 255)


def pixelwise_model(classes=3):
    """1×1 tanh conv → GAP → Dense: the input gradient has a closed form per pixel."""
    inputs = keras.Input((6, 6, 2))
    x = layers.Conv2D(4, 1, activation="tanh", name="target")(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(classes, activation="softmax", name="dense")(x))


def numpy_rrr(model, images, masks):
    """σ² Σ_outside (∂ Σ_k log p_k / ∂x)², mean over annotated images, in float64 numpy."""
    w1, b1 = (np.asarray(v, np.float64) for v in model.get_layer("target").get_weights())
    w2, b2 = (np.asarray(v, np.float64) for v in model.get_layer("dense").get_weights())
    w1 = w1[0, 0]  # (C_in, C)
    x = images.astype(np.float64)
    hidden = np.tanh(x @ w1 + b1)  # (N, H, W, C)
    cells = hidden.shape[1] * hidden.shape[2]
    logits = hidden.mean(axis=(1, 2)) @ w2 + b2
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    # Σ_k log p_k = Σ_k z_k − K·logsumexp(z): its gradient in z is 1 − K·p.
    d_logits = 1 - p.shape[-1] * p
    d_hidden = (d_logits @ w2.T)[:, None, None, :] / cells
    d_x = (d_hidden * (1 - hidden**2)) @ w1.T
    outside = 1 - masks.astype(np.float64)[..., None]
    per_image = (x.std() ** 2) * ((outside * d_x) ** 2).sum(axis=(1, 2, 3))
    annotated = masks.reshape(len(masks), -1).any(axis=1)
    return per_image[annotated].mean()


def rrr_batch():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (5, 6, 6, 2)).astype("float32")
    masks = np.zeros((5, 6, 6), dtype="uint8")
    masks[0, 1:4, 2:5] = masks[1, :3] = masks[2, 4:, 4:] = masks[4, 2:, :2] = 255
    return images, np.array([0, 1, 2, 0, 1]), masks  # image 3 has no annotation


def test_rrr_penalty_against_numpy():
    images, labels, masks = rrr_batch()
    keras.utils.set_random_seed(0)
    model = pixelwise_model()
    guided = keras_cam.CAMGuidedModel(model, penalty="rrr")
    guided.compile("sgd", "sparse_categorical_crossentropy")
    result = guided.evaluate(
        {"images": images, "masks": masks}, labels, batch_size=5, verbose=0, return_dict=True
    )
    expected = numpy_rrr(model, images, masks > 0)
    assert expected > 1e-3
    assert result["cam_guidance"] == pytest.approx(expected, rel=1e-4)
    # Another input scale: σ follows it.
    scaled = guided.evaluate(
        {"images": images / 255, "masks": masks}, labels, batch_size=5, verbose=0, return_dict=True
    )
    assert scaled["cam_guidance"] == pytest.approx(
        numpy_rrr(model, images / 255, masks > 0), rel=1e-4
    )


def gradcam_model():
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, activation="tanh", name="valid")(inputs)  # 8 → 6: no divisor of 8
    x = layers.Conv2D(5, 3, padding="same", activation="softplus", name="target")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(3, activation="softmax", name="dense")(x))


def numpy_area_resize(masks, size):
    """Upsample to a common multiple of both sizes, then average blocks: area resizing."""
    source = masks.shape[1]
    common = np.lcm(source, size)
    up = masks.astype(np.float64).repeat(common // source, 1).repeat(common // source, 2)
    block = common // size
    return up.reshape(len(masks), size, block, size, block).mean(axis=(2, 4))


def test_gradcam_penalty_masks_at_input_size_resized_by_area_against_numpy():
    images, labels = np.random.default_rng(1).uniform(-1, 1, (4, 8, 8, 3)), np.arange(4) % 3
    masks = np.zeros((4, 8, 8), dtype="uint8")
    masks[0, 1:5, 2:7] = masks[1, :3] = masks[2, 5:, 3:] = masks[3, 2:6, 1:4] = 255
    keras.utils.set_random_seed(0)
    model = gradcam_model()
    guided = keras_cam.CAMGuidedModel(model, layer="target", penalty="gradcam")
    guided.compile("sgd", "sparse_categorical_crossentropy")
    result = guided.evaluate(
        {"images": images.astype("float32"), "masks": masks},
        labels,
        batch_size=4,
        verbose=0,
        return_dict=True,
    )
    features = keras.Model(model.input, model.get_layer("target").output)
    activations = keras.ops.convert_to_numpy(features(images.astype("float32"))).astype(np.float64)
    kernel = np.asarray(model.get_layer("dense").get_weights()[0], np.float64)
    signed = np.einsum("nhwc,nc->nhw", activations, kernel[:, labels].T / 36)
    inside = numpy_area_resize(masks > 0, 6)
    share = 1 - (np.maximum(signed, 0) * inside).sum((1, 2)) / (np.abs(signed).sum((1, 2)) + 1e-7)
    assert 0 <= result["cam_guidance"] <= 1
    assert result["cam_guidance"] == pytest.approx(share.mean(), rel=1e-4)
    # uint8 0/255 masks and booleans are the same masks.
    as_bool = guided.evaluate(
        {"images": images.astype("float32"), "masks": masks > 0},
        labels,
        batch_size=4,
        verbose=0,
        return_dict=True,
    )
    assert as_bool["cam_guidance"] == pytest.approx(result["cam_guidance"], rel=1e-6)
    # Several layers: the mean of each layer's term.
    both = keras_cam.CAMGuidedModel(model, layer=["valid", "target"], penalty="gradcam")
    alone = keras_cam.CAMGuidedModel(model, layer="valid", penalty="gradcam")
    values = []
    for trainee in (both, alone):
        trainee.compile("sgd", "sparse_categorical_crossentropy")
        values.append(
            trainee.evaluate(
                {"images": images.astype("float32"), "masks": masks},
                labels,
                batch_size=4,
                verbose=0,
                return_dict=True,
            )["cam_guidance"]
        )
    assert values[0] == pytest.approx((values[1] + result["cam_guidance"]) / 2, rel=1e-4)


def test_area_resize_in_closed_form():
    ones = keras.ops.ones((1, 2, 2, 1))
    masks = np.zeros((1, 3, 3), dtype=bool)
    masks[0, 0, 0] = True  # a third of the first row and column: 4/9 of cell (0, 0)
    value = float(energy_outside_mask(ones, ones, masks.astype("float32"))[0])
    assert value == pytest.approx(1 - (4 / 9) / 4, rel=1e-6)


def test_bad_settings_and_masks_are_refused_before_any_step():
    images, labels, masks = rrr_batch()
    model = pixelwise_model()
    for weight in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match=r"weight .* finite number >= 0"):
            keras_cam.CAMGuidedModel(model, weight=weight)
    with pytest.raises(ValueError, match="penalty must be one of"):
        keras_cam.CAMGuidedModel(model, penalty="lrp")
    guided = keras_cam.CAMGuidedModel(model)
    guided.compile("sgd", "sparse_categorical_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=r"integers with the values \[7\]"):
        guided.fit({"images": images, "masks": masks // 255 * 7}, labels, verbose=0)
    # A failure inside the first compiled step leaves the wrapper usable.
    with pytest.raises(ValueError, match="masks must be \\(N, H, W\\)"):
        guided.fit(
            {"images": images, "masks": masks[:, :, :, None].repeat(2, -1)}, labels, verbose=0
        )
    for kept, weights in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(kept, weights)
    guided.fit({"images": images, "masks": masks}, labels, verbose=0)


def test_wrapper_save_and_load_weights(tmp_path):
    images, labels, masks = rrr_batch()
    guided = keras_cam.CAMGuidedModel(pixelwise_model())
    guided.compile("adam", "sparse_categorical_crossentropy")
    guided.fit({"images": images, "masks": masks}, labels, epochs=2, verbose=0)
    path = str(tmp_path / "guided.weights.h5")
    guided.save_weights(path)
    fresh = keras_cam.CAMGuidedModel(pixelwise_model())
    fresh.load_weights(path)
    for saved, loaded in zip(guided.model.get_weights(), fresh.model.get_weights(), strict=True):
        np.testing.assert_array_equal(saved, loaded)


def decoy_task(count, seed, decoy):
    """The centre 4×4 block brighter (class 1) or darker (class 0) under noise, and a decoy: the
    top-left 3×3 corner at +1 (class 1) or −1 (class 0), random at test.

    The decoy is clean and the object noisy (its Bayes accuracy is about 0.98), so plain
    training fits the training set through the corner and stops learning the block: it scores
    chance on random decoys (0.49 over backends and seeds 0-3). Guided, it scored 0.95-0.97.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    sign = np.where(labels == 1, 1.0, -1.0)
    images = rng.normal(0, 0.5, (count, 8, 8, 1)).astype("float32")
    images[:, 2:6, 2:6, 0] += 0.25 * sign[:, None, None]
    corner = sign if decoy else rng.choice([-1.0, 1.0], count)
    images[:, :3, :3, 0] = corner[:, None, None]
    masks = np.ones((count, 8, 8), dtype=bool)
    masks[:, :3, :3] = False
    return images, labels, masks


def decoy_model():
    """A linear convolution and a dense head: the decoy and the block are both linear cues."""
    inputs = keras.Input((8, 8, 1))
    x = layers.Conv2D(4, 3, padding="same", name="target")(inputs)
    return keras.Model(inputs, layers.Dense(2, activation="softmax")(layers.Flatten()(x)))


def test_rrr_guided_fit_beats_plain_training_on_decoys():
    images, labels, masks = decoy_task(256, 0, decoy=True)
    test_images, test_labels, _ = decoy_task(512, 1, decoy=False)
    accuracy = {}
    for guided in (False, True):
        keras.utils.set_random_seed(0)
        model = decoy_model()
        trainee = keras_cam.CAMGuidedModel(model) if guided else model
        fed = {"images": images, "masks": masks} if guided else images
        trainee.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
        trainee.fit(fed, labels, epochs=6, batch_size=32, verbose=0)
        predicted = np.argmax(model.predict(test_images, verbose=0), axis=-1)
        accuracy[guided] = float(np.mean(predicted == test_labels))
    assert accuracy[False] < 0.65, accuracy
    assert accuracy[True] > 0.85, accuracy
