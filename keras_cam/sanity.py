"""The model-parameter randomisation test: do the maps depend on what the model learned?"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from keras_cam.explainer import CAMExplainer, MethodSpec, Preprocess
from keras_cam.metrics import rank_correlation


def kernels_to_randomise(explainer: CAMExplainer, scope: str = "head") -> list[Any]:
    """The kernels (weights of two or more dimensions) the sanity check re-draws.

    Raises:
        ValueError: unknown `scope`, or no kernel in it (e.g. a head of only
            pooling and softmax), so the check could not say anything.
    """
    if scope not in ("head", "all"):
        raise ValueError(f"randomize must be 'head' or 'all', got {scope!r}.")
    layers = explainer._resolve().head_layers if scope == "head" else explainer.model.layers
    variables = [v for layer in layers for v in layer.trainable_weights if len(v.shape) >= 2]
    if not variables:
        raise ValueError(
            f"The {'head after ' + explainer.layer if scope == 'head' else 'model'} has no "
            f"kernel to randomise; use randomize='all' or a layer further from the output."
        )
    return variables


def _randomised_kernels(explainer: CAMExplainer, scope: str, seed: int) -> list[tuple[Any, Any]]:
    """(variable, new value) for every kernel to re-draw: the head's, or the whole model's."""
    variables = kernels_to_randomise(explainer, scope)
    rng = np.random.default_rng(seed)
    changes = []
    for variable in variables:
        value = np.asarray(keras.ops.convert_to_numpy(variable))
        scale = float(value.std()) or 0.05
        changes.append((variable, rng.normal(0.0, scale, value.shape).astype(value.dtype)))
    return changes


def sanity_check(
    model: keras.Model,
    images: Any,
    *,
    method: MethodSpec = "gradcam",
    layer: str | None = None,
    randomize: str = "head",
    preprocess: Preprocess | None = None,
    seed: int = 0,
    output: str | int | None = None,
    explainer: CAMExplainer | None = None,
) -> float:
    """Mean rank correlation between the model's maps and those of a randomised model.

    Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018
    (model-parameter randomisation). The maps of the images' predicted
    classes are compared, by Spearman rank correlation per image, with the
    maps of the same classes after the kernels (weights with two or more
    dimensions) of the layers after the target layer (`randomize="head"`) or
    of every layer (`"all"`) are re-drawn from a Gaussian with each kernel's
    own standard deviation; biases and normalisation statistics are kept. A
    correlation near 1 means the map explains the image, not the model.

    The kernels are re-drawn in place and restored before returning, also on
    error: do not call it while another thread trains the model. No global
    random state is used.

    Args:
        model: the classifier.
        images: display images, as for `CAMExplainer`.
        method: the CAM method. Defaults to `"gradcam"`.
        layer: the target layer. Defaults to `None` (automatic).
        randomize: `"head"` or `"all"`. Defaults to `"head"`.
        preprocess: maps display images to model input. Defaults to `None`.
        seed: seed of the re-drawn kernels. Defaults to `0`.
        output: which output of a multi-output model is explained: a dict
            key, an output layer name or a position (as for `CAMExplainer`).
            Defaults to `None` (the only output).
        explainer: an existing single-method explainer of `model` to reuse
            (no new compilation). Defaults to `None`.

    Returns:
        The mean Spearman correlation in [-1, 1]; lower is better.

    Example:

    >>> keras_cam.sanity_check(model, images)                          # doctest: +SKIP
    0.12
    """
    if explainer is None:
        explainer = CAMExplainer(model, method, layer=layer, output=output)
    elif output is not None and output != explainer.output:
        raise ValueError(
            f"sanity_check(output={output!r}) but the given explainer explains "
            f"output={explainer.output!r}; pass one or the other."
        )
    batch = explainer._prepare(images, "predicted", preprocess)
    before = explainer._explain(batch)[explainer.method.name]
    changes = _randomised_kernels(explainer, randomize, seed)
    saved = [(variable, keras.ops.convert_to_numpy(variable)) for variable, _ in changes]
    try:
        for variable, value in changes:
            variable.assign(value)
        fixed = explainer._prepare(images, before.classes.astype(np.int32), preprocess)
        after = explainer._explain(fixed)[explainer.method.name]
    finally:
        for variable, value in saved:
            variable.assign(value)
    return rank_correlation(before.heatmaps, after.heatmaps)
