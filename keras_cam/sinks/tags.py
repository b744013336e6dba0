"""What each TensorBoard tag of the callback is: display names, descriptions, the scalars layout.

TensorBoard shows a summary's description in its card's info, so a user who
meets `cam/gradcam/drift` can read what drift measures and which way is bad
without opening this package's docs. The custom-scalars layout groups each
method's metrics in one section of TensorBoard's CUSTOM SCALARS dashboard.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tensorboard.plugins.custom_scalar import layout_pb2

from keras_cam.diagnostics import registry

_SCALARS = {
    "mean_score": (
        "mean score",
        "Mean over the probe images of the explained score: the logit of the explained class "
        "(score='logit', the default) or its probability (score='probability').",
    ),
    "sanity": (
        "sanity check",
        "Mean Spearman rank correlation between the maps and those of the model with its head "
        "randomised (Adebayo et al. 2018): near 0 means the maps depend on the weights, near "
        "1 that they would look the same for any model.",
    ),
}

_IMAGES = {
    "grid": (
        "grid",
        "Each probe image next to its map, captioned with the true class, the predicted class "
        "and its probability (p=). The colour bar gives the map's scale (normalize=); 'flat' "
        "marks a map with nothing to show. One page per sample.",
    ),
    "timeline": (
        "timeline",
        "The first probe images, then their maps at each event (columns headed with the "
        "epoch as Keras prints it). With labels, a green border marks a right prediction at "
        "that epoch, a red one a wrong one.",
    ),
    "topk": ("top-k", "Each probe image with the maps of its k highest-scoring classes."),
    "per_image": (
        "drift per image",
        "Distribution of the per-image drift (see drift) over the probe at this event.",
    ),
    "misclassified": (
        "misclassified",
        "Probe images the model gets wrong at this event, with their maps.",
    ),
}

_FIXED = {
    "cam/compare": (
        "compare methods",
        "One row per probe image: the image, then each method's map. Each method's colour "
        "bar gives its own scale (the methods' units differ).",
    ),
    "cam/alarms": ("alarms", "Alarm rules (keras_cam.Alarm) that fired, with the worst images."),
}


def _metrics() -> dict[str, tuple[str, str]]:
    """(display name, description) of every scalar: the registry's metrics and the others."""
    found = {
        name: (metric.display_name, metric.description) for name, metric in registry.METRICS.items()
    }
    return {**_SCALARS, **found}


def describe(tag: str) -> tuple[str, str]:
    """The display name and description TensorBoard shows for one of the callback's tags.

    Tags the callback does not know get their own name and no description.

    Args:
        tag: a tag such as `"cam/gradcam/drift"`.

    Returns:
        `(display_name, description)`.

    Example:

    >>> describe("cam/gradcam/drift")[0]
    'gradcam: attention drift'
    """
    if tag in _FIXED:
        return _FIXED[tag]
    parts = tag.split("/")
    if parts[0] != "cam" or len(parts) < 2:
        return tag, ""
    method = parts[1]
    if len(parts) == 2:
        return f"{method}: overlays", f"Each probe image with its {method} map, one card each."
    kind = parts[2]
    metrics = _metrics()
    if kind.startswith("worst_") and kind[6:] in metrics:
        name, description = metrics[kind[6:]]
        return (
            f"{method}: worst {name}",
            f"The probe images with the worst {name}, with their maps. {name}: {description}",
        )
    name, description = metrics.get(kind) or _IMAGES.get(kind) or (kind, "")
    return f"{method}: {name}", description


def scalars_layout(methods: Sequence[str], metrics: Sequence[str]) -> layout_pb2.Layout:
    """One CUSTOM SCALARS section per method, with a chart for each of its scalars.

    Args:
        methods: the method names, as in the tags (`cam/<method>/...`).
        metrics: the metric names logged for every method.

    Returns:
        The `tensorboard.plugins.custom_scalar` layout proto.
    """
    layout = layout_pb2.Layout()
    for method in methods:
        category = layout.category.add(title=f"keras-cam {method}")
        for metric in ("mean_score", *metrics):
            tag = f"cam/{method}/{metric}"
            chart = category.chart.add(title=describe(tag)[0])
            chart.multiline.tag.append(f"^{re.escape(tag)}$")
    return layout
