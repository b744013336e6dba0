"""The model-parameter randomisation test: do the maps depend on what the model learned?"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from keras_cam.core.explainer import CAMExplainer, MethodSpec, Preprocess
from keras_cam.core.options import ExplainOptions
from keras_cam.diagnostics.metrics import rank_correlation


def kernels_to_randomise(explainer: CAMExplainer, scope: str = "head") -> list[Any]:
    """The kernels (weights of two or more dimensions) the sanity check re-draws.

    Raises:
        ValueError: unknown `scope`, or no kernel in it (e.g. a head of only
            pooling and softmax), so the check could not say anything.
    """
    if scope not in ("head", "all"):
        raise ValueError(f"randomize must be 'head' or 'all', got {scope!r}.")
    layers = explainer.resolved.head_layers if scope == "head" else explainer.model.layers
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
    randomize: str = "head",
    preprocess: Preprocess | None = None,
    seed: int = 0,
    explainer: CAMExplainer | None = None,
    options: ExplainOptions | None = None,
    **overrides: Any,
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
        randomize: `"head"` or `"all"`. Defaults to `"head"`.
        preprocess: maps display images to model input. Defaults to `None`.
        seed: seed of the re-drawn kernels. Defaults to `0`.
        explainer: an existing single-method explainer of `model` to reuse
            (no new compilation; it has its own options). Defaults to `None`.
        options: what is explained and how (`keras_cam.ExplainOptions`),
            for the explainer made here. Defaults to `None`: `ExplainOptions()`.
        **overrides: any `ExplainOptions` field as a keyword (`layer=`,
            `output=`, ...), replacing that field of `options`.

    Returns:
        The mean Spearman correlation in [-1, 1]; lower is better.

    Example:

    >>> keras_cam.sanity_check(model, images)                          # doctest: +SKIP
    0.12
    """
    if explainer is None:
        explainer = CAMExplainer(model, method, options, **overrides)
    elif options is not None or overrides:
        given = ", ".join(f"{name}={value!r}" for name, value in overrides.items())
        raise ValueError(
            f"sanity_check({given or f'options={options!r}'}) but the given explainer "
            f"explains with its own options ({explainer.options}): pass one or the other."
        )
    batch = explainer.prepare(images, preprocess=preprocess)
    before = explainer.run(batch)[explainer.method.name]
    changes = _randomised_kernels(explainer, randomize, seed)
    saved = [(variable, keras.ops.convert_to_numpy(variable)) for variable, _ in changes]
    try:
        for variable, value in changes:
            variable.assign(value)
        fixed = explainer.prepare(images, before.classes.astype(np.int32), None, preprocess)
        after = explainer.run(fixed)[explainer.method.name]
    finally:
        for variable, value in saved:
            variable.assign(value)
    return rank_correlation(before.heatmaps, after.heatmaps)


def check_sanity_check_applies(explainer: CAMExplainer) -> None:
    """Fails before training, not after it, where the sanity check has nothing to re-draw."""
    try:
        kernels_to_randomise(explainer)
    except ValueError:
        raise ValueError(
            f"sanity_check=True re-draws the kernels of the layers after the target "
            f"layer {explainer.layer!r}, but they have none (e.g. only pooling "
            f"and softmax), so the check could not say anything. Pass an earlier "
            f"layer (explain=ExplainOptions(layer=...)) or drop sanity_check."
        ) from None
