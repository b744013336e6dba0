"""The explainer's public seam: prepare(), run() and what it resolved."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import conv_classifier, to_numpy

import keras_cam
from keras_cam.core.result import PreparedBatch, Resolved


def test_resolved_describes_the_layer_and_the_head(model):
    resolved = keras_cam.CAMExplainer(model, layer="conv1").resolved
    assert isinstance(resolved, Resolved)
    assert (resolved.path, resolved.layer) == ("conv1", model.get_layer("conv1"))
    assert [layer.name for layer in resolved.head_layers] == ["conv2", "gap", "dense"]
    assert (resolved.spatial_rank, resolved.channels_first) == (2, False)
    assert (resolved.head_activation, resolved.confidence_activation) == ("softmax", "softmax")
    assert (resolved.output, resolved.num_classes, resolved.passes_per_image) == (0, 3, 1)
    linear = keras_cam.CAMExplainer(conv_classifier(activation=None), aug_smooth=True).resolved
    assert (linear.head_activation, linear.confidence_activation) == (None, "softmax")
    assert linear.passes_per_image == 6
    with pytest.raises(AttributeError):
        linear.path = "conv1"  # read-only


def test_prepare_then_run_is_the_call(model, images):
    explainer = keras_cam.CAMExplainer(model, ["gradcam", "hirescam"])
    batch = explainer.prepare(images, [2, 1, 0, 2])
    assert isinstance(batch, PreparedBatch)
    ran = explainer.run(batch)
    called = explainer(images, targets=[2, 1, 0, 2])
    for name in ("gradcam", "hirescam"):
        np.testing.assert_array_equal(ran[name].classes, [2, 1, 0, 2])
        np.testing.assert_allclose(ran[name].heatmaps, called[name].heatmaps, atol=1e-6)
    # top2: two rank-major copies, flat; the call puts the rank axis after the image's.
    top = explainer.prepare(images, "top2")
    assert top.ranks == 2
    flat = explainer.run(top)["gradcam"]
    per_image = explainer(images, targets="top2")["gradcam"]
    probabilities = to_numpy(model(images))
    for rank in range(2):
        part = flat.take(rank * 4, rank * 4 + 4)
        np.testing.assert_array_equal(part.classes, np.argsort(-probabilities, 1)[:, rank])
        np.testing.assert_allclose(part.heatmaps, per_image.heatmaps[:, rank], atol=1e-6)


def test_run_of_a_positive_batch_is_the_strongest_positive_label(images):
    model = conv_classifier(classes=4, activation="sigmoid")
    explainer = keras_cam.CAMExplainer(model)
    batch = explainer.prepare(images, "positive")
    assert batch.positive_labels == 4
    strongest = explainer.run(batch)["gradcam"]
    per_label = explainer(images, targets="positive")
    positive = to_numpy(model(images)) > 0.5
    np.testing.assert_array_equal(strongest.predicted, positive)
    np.testing.assert_array_equal(per_label.predicted, positive)
    np.testing.assert_allclose(strongest.heatmaps, per_label.heatmaps.max(axis=1), atol=1e-6)
    assert strongest.heatmaps.shape == images.shape[:3]
