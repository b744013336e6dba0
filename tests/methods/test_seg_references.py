"""Seg-Eigen-CAM and ROAD against pytorch-grad-cam 1.5.7 on weights copied from a torch CNN.

The same nets and tolerances as `test_pytorch_references.py`.
"""

import numpy as np
import pytest
from test_pytorch_references import (
    CLASSES,
    _assert_equal_per_image,
    _reference_signed,
    pgc,
)
from test_pytorch_references import nets as nets  # the shared fixture

import keras_cam
from keras_cam import metrics

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow


def test_segeigencam_equals_pytorch_grad_cam(nets):
    """Both choose the sign by |min| vs |max|, so no sign is left to align."""
    net, model, x, torch_x = nets
    normalised, signed = _reference_signed(pgc.SegEigenCAM, net, torch_x)
    ours = keras_cam.explain(model, x, method="segeigencam", layer="target", targets=CLASSES).raw
    _assert_equal_per_image(ours, normalised)
    _assert_equal_per_image(ours, np.maximum(signed, 0))


def test_road_equals_pytorch_grad_cam(nets, monkeypatch):
    """Without noise (the reference draws from torch's generator, ours from numpy's), on
    smooth maps (ties at a percentile would be broken alike anyway)."""
    from pytorch_grad_cam.metrics import road
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net, model, x, torch_x = nets
    monkeypatch.setattr(road.NoisyLinearImputer.__init__, "__defaults__", (0.0, []))
    maps = keras_cam.explain(model, x, method="gradcam", layer="target", targets=CLASSES).heatmaps
    targets = [ClassifierOutputTarget(c) for c in CLASSES]
    percentiles = [20, 50, 80]
    theirs = {
        "most": road.ROADMostRelevantFirstAverage(percentiles)(torch_x, maps, targets, net),
        "least": road.ROADLeastRelevantFirstAverage(percentiles)(torch_x, maps, targets, net),
        "combined": road.ROADCombined(percentiles)(torch_x, maps, targets, net),
    }
    options = {"percentiles": percentiles, "noise": 0.0, "per_image": True}
    ours = {
        "most": metrics.road_most_relevant_first(model, x, maps, CLASSES, **options),
        "least": metrics.road_least_relevant_first(model, x, maps, CLASSES, **options),
        "combined": metrics.road_combined(model, x, maps, CLASSES, **options),
    }
    for key, value in theirs.items():
        assert np.abs(value).max() > 1e-4, key  # something was removed
        np.testing.assert_allclose(ours[key], value, atol=1e-4, err_msg=key)


def test_arcc_equals_pytorch_grad_cam(nets, monkeypatch):
    from pytorch_grad_cam.metrics import arcc, road
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net, model, x, torch_x = nets
    monkeypatch.setattr(road.NoisyLinearImputer.__init__, "__defaults__", (0.0, []))
    maps = keras_cam.explain(model, x, method="gradcam", layer="target", targets=CLASSES).heatmaps
    targets = [ClassifierOutputTarget(c) for c in CLASSES]
    base = pgc.GradCAM(model=net, target_layers=[net.target])
    theirs = arcc.ARCC(base)(torch_x, maps.astype(np.float32), targets, net)

    def explain(images):
        return keras_cam.explain(
            model, images, method="gradcam", layer="target", targets=CLASSES
        ).heatmaps

    ours = metrics.arcc(model, x, maps, CLASSES, explain=explain, noise=0.0, per_image=True)
    assert np.ptp(theirs) > 0
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
