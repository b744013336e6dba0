"""background_sensitivity, the shortcut check the guidance does not optimise, by hand."""

import keras
import numpy as np
import pytest
from conftest import conv_classifier, read_events
from keras import layers

import keras_cam
from keras_cam.data import make_shapes
from keras_cam.diagnostics import metrics


def linear_model(shape, classes=3):
    """Flatten → Dense softmax: its outputs have a closed form in numpy."""
    inputs = keras.Input(shape)
    return keras.Model(
        inputs, layers.Dense(classes, activation="softmax")(layers.Flatten()(inputs))
    )


def numpy_softmax(model, images):
    kernel, bias = (np.asarray(v, np.float64) for v in model.get_weights())
    logits = images.reshape(len(images), -1).astype(np.float64) @ kernel + bias
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def numpy_swapped(images, masks):
    """The composite pixel by pixel: own object, next image's background, its object in its
    mean background colour (its mean colour when it has no background)."""
    n, h, w, c = images.shape
    out = np.empty((n, h, w, c))
    for i in range(n):
        j = (i + 1) % n
        background = [images[j, y, x] for y in range(h) for x in range(w) if not masks[j, y, x]]
        fill = np.mean(background, axis=0) if background else images[j].mean(axis=(0, 1))
        for y in range(h):
            for x in range(w):
                if masks[i, y, x]:
                    out[i, y, x] = images[i, y, x]
                else:
                    out[i, y, x] = fill if masks[j, y, x] else images[j, y, x]
    return out


def test_background_sensitivity_against_numpy():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (4, 5, 5, 2)).astype("float32")
    masks = np.zeros((4, 5, 5), dtype="uint8")
    masks[0, 1:4, 1:3] = masks[2, 2:, 3:] = 255
    masks[1] = 255  # all object: nothing of it changes, its background colour is its mean
    # masks[3] empty: the whole image is swapped
    keras.utils.set_random_seed(0)
    model = linear_model((5, 5, 2))
    swapped = numpy_swapped(images.astype(np.float64), masks > 0)
    np.testing.assert_allclose(metrics.swap_backgrounds(images, masks), swapped, rtol=1e-6)
    assert np.array_equal(swapped[1], images[1])
    before, after = numpy_softmax(model, images), numpy_softmax(model, swapped)
    classes = np.array([0, 1, 2, 1])
    expected = np.abs(before - after)[np.arange(4), classes]
    assert expected[[0, 2, 3]].min() > 1e-4  # well above the float32 tolerance below
    assert expected[1] == 0
    values = metrics.background_sensitivity(model, images, masks, classes, per_image=True)
    np.testing.assert_allclose(values, expected, atol=1e-6)
    predicted = before.argmax(-1)  # classes=None: the unchanged image's predicted class
    assert metrics.background_sensitivity(model, images, masks, batch_size=3) == pytest.approx(
        np.abs(before - after)[np.arange(4), predicted].mean(), abs=1e-6
    )
    # Grey images without a channel axis, and the preprocess hook.
    grey = linear_model((5, 5, 1))
    np.testing.assert_allclose(
        metrics.background_sensitivity(
            grey, images[..., 0] * 255, masks, classes, preprocess=lambda x: x / 255, per_image=True
        ),
        np.abs(numpy_softmax(grey, images[..., :1]) - numpy_softmax(grey, swapped[..., :1]))[
            np.arange(4), classes
        ],
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="must match the images"):
        metrics.background_sensitivity(model, images, masks[:, :4])


def test_background_sensitivity_in_the_callback_scalars_and_keras_logs(tmp_path):
    data, probe = make_shapes(16, size=16, seed=0), make_shapes(4, size=16, seed=1)
    keras.utils.set_random_seed(0)
    model = conv_classifier()
    model.compile("adam", "sparse_categorical_crossentropy")
    callback = keras_cam.CAMCallback(
        probe.images,
        tmp_path,
        preprocess=lambda x: x / 255.0,
        watch=keras_cam.WatchOptions(
            probe_masks=probe.masks,
            metrics=("background_sensitivity",),
            log_metrics=("background_sensitivity",),
        ),
    )
    history = model.fit(data.images / 255.0, data.labels, epochs=1, verbose=0, callbacks=[callback])
    result = keras_cam.explain(model, probe.images / 255.0)
    expected = metrics.background_sensitivity(
        model, probe.images, probe.masks, result.classes, preprocess=lambda x: x / 255.0
    )
    assert expected > 0
    logged = history.history["cam_gradcam_background_sensitivity"][-1]
    assert logged == pytest.approx(expected, rel=1e-4, abs=1e-6)
    scalars = read_events(str(tmp_path))["cam/gradcam/background_sensitivity"]
    assert scalars[0] == pytest.approx(expected, rel=1e-4, abs=1e-6)
