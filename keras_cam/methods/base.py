"""The contract every CAM method follows.

A method turns the target layer's activations `A` (N, h, w, C), the gradients
`dS/dA` of the explained score `S` and the explained class ids into a map
(N, h, w). It is written only with `keras.ops`, so one file serves every
backend and runs inside the explainer's compiled function. ReLU, upsampling
and normalisation are shared by the explainer, never repeated in a method.

Most methods only weight channels (`channel_weights`); those that weight
each location (HiResCAM, Layer-CAM, ...) override `cam` instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from keras import ops

if TYPE_CHECKING:
    from keras_cam.layers import LayerSplit


class CAMMethod:
    """Base class of a CAM method.

    Subclasses set `name` (the registry key), `description` (one line for
    `available_methods()`) and override `channel_weights` or `cam`.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    uses_gradients: ClassVar[bool] = True

    def prepare(self, split: LayerSplit) -> None:
        """Checks the model structure once, when the explainer is built.

        Raises `ValueError` naming the problem when the method cannot explain
        the model (e.g. CAM on a head that is not GAP→Dense).
        """

    def channel_weights(self, activations: Any, gradients: Any, classes: Any) -> Any:
        """Returns one weight per channel and image, shape (N, 1, 1, C)."""
        raise NotImplementedError(f"{type(self).__name__} defines neither channel_weights nor cam")

    def cam(self, activations: Any, gradients: Any, classes: Any) -> Any:
        """Returns the map before ReLU, shape (N, h, w)."""
        weights = self.channel_weights(activations, gradients, classes)
        return ops.sum(weights * activations, axis=-1)
