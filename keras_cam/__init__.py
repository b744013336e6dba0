"""keras_cam: where a Keras image classifier looks, live in TensorBoard while it trains.

Example:

    import keras_cam

    callback = keras_cam.CAMCallback((x_val[:16], y_val[:16]), "runs/cam")
    model.fit(x, y, epochs=10, callbacks=[callback])

    result = keras_cam.explain(model, images)
    overlays = keras_cam.overlay(images, result.heatmaps)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from keras_cam.render.overlay import overlay

__version__ = "0.1.0"

# The public names are imported on first use (PEP 562), so that `import keras_cam` (and the
# `keras-cam` command's `--help`) does not pay for importing Keras and its backend.
# `overlay` imports without Keras and is bound at once: the submodule of the same name
# would otherwise shadow the function once some code imports it.
_EXPORTS = {
    "Alarm": "keras_cam.diagnostics.alarms",
    "CAMCallback": "keras_cam.training.callback",
    "CAMExplainer": "keras_cam.core.explainer",
    "CAMGuidedModel": "keras_cam.training.guidance",
    "CAMResult": "keras_cam.core.result",
    "CSVSink": "keras_cam.sinks.csv_file",
    "Event": "keras_cam.sinks.event",
    "ExplainOptions": "keras_cam.core.options",
    "FolderSink": "keras_cam.sinks.folder",
    "MLflowSink": "keras_cam.sinks.mlflow",
    "ReopeningSink": "keras_cam.sinks.event",
    "Sink": "keras_cam.sinks.event",
    "TensorBoardSink": "keras_cam.sinks.tensorboard",
    "ViewOptions": "keras_cam.training.options",
    "WandbSink": "keras_cam.sinks.wandb",
    "WatchOptions": "keras_cam.training.options",
    "available_methods": "keras_cam.methods",
    "explain": "keras_cam.core.explainer",
    "sanity_check": "keras_cam.diagnostics.sanity",
    "sequence_cell": "keras_cam.render.cell_display",
    "TokenGrid": "keras_cam.core.tokens",
    "volume_cell": "keras_cam.render.cell_display",
}

# Public modules, by their public name.
_MODULES = {"methods": "keras_cam.methods", "metrics": "keras_cam.diagnostics.metrics"}

if TYPE_CHECKING:
    from keras_cam import methods
    from keras_cam.core.explainer import CAMExplainer, explain
    from keras_cam.core.options import ExplainOptions
    from keras_cam.core.result import CAMResult
    from keras_cam.core.tokens import TokenGrid
    from keras_cam.diagnostics import metrics
    from keras_cam.diagnostics.alarms import Alarm
    from keras_cam.diagnostics.sanity import sanity_check
    from keras_cam.methods import available_methods
    from keras_cam.render.cell_display import sequence_cell, volume_cell
    from keras_cam.sinks.csv_file import CSVSink
    from keras_cam.sinks.event import Event, ReopeningSink, Sink
    from keras_cam.sinks.folder import FolderSink
    from keras_cam.sinks.mlflow import MLflowSink
    from keras_cam.sinks.tensorboard import TensorBoardSink
    from keras_cam.sinks.wandb import WandbSink
    from keras_cam.training.callback import CAMCallback
    from keras_cam.training.guidance import CAMGuidedModel
    from keras_cam.training.options import ViewOptions, WatchOptions


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'keras_cam' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "Alarm",
    "CAMCallback",
    "CAMExplainer",
    "CAMGuidedModel",
    "CAMResult",
    "CSVSink",
    "Event",
    "ExplainOptions",
    "FolderSink",
    "MLflowSink",
    "ReopeningSink",
    "Sink",
    "TensorBoardSink",
    "TokenGrid",
    "ViewOptions",
    "WandbSink",
    "WatchOptions",
    "__version__",
    "available_methods",
    "explain",
    "methods",
    "metrics",
    "overlay",
    "sanity_check",
    "sequence_cell",
    "volume_cell",
]
