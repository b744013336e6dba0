"""keras_cam: where a Keras image classifier looks, live in TensorBoard while it trains.

Example:

    import keras_cam

    callback = keras_cam.CAMCallback((x_val[:16], y_val[:16]), "runs/cam")
    model.fit(x, y, epochs=10, callbacks=[callback])

    result = keras_cam.explain(model, images)
    overlays = keras_cam.overlay(images, result.heatmaps)
"""

from keras_cam import methods, metrics
from keras_cam.callback import CAMCallback
from keras_cam.explainer import CAMExplainer, CAMResult, explain
from keras_cam.methods import available_methods
from keras_cam.overlay import overlay
from keras_cam.sanity import sanity_check
from keras_cam.tokens import TokenGrid

__version__ = "0.1.0"

__all__ = [
    "CAMCallback",
    "CAMExplainer",
    "CAMResult",
    "TokenGrid",
    "__version__",
    "available_methods",
    "explain",
    "methods",
    "metrics",
    "overlay",
    "sanity_check",
]
