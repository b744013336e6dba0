"""CAM, the original class activation map."""

from keras import layers, ops

from keras_cam.core.spatial import per_channel, spatial_axes
from keras_cam.methods.base import CAMMethod

# Layers that may sit between the pooling and the Dense layer of a CAM head
# without changing what the head computes at inference.
_INFERENCE_NO_OPS = (
    layers.Dropout,
    layers.SpatialDropout1D,
    layers.SpatialDropout2D,
    layers.SpatialDropout3D,
    layers.GaussianNoise,
    layers.Identity,
)
_GLOBAL_AVERAGE_POOLING = (
    layers.GlobalAveragePooling1D,
    layers.GlobalAveragePooling2D,
    layers.GlobalAveragePooling3D,
)


class CAM(CAMMethod):
    """CAM: channels weighted by the classifier's Dense kernel.

    Zhou et al., "Learning Deep Features for Discriminative Localization",
    CVPR 2016. Only defined for a head made of global average pooling (1-D,
    2-D or 3-D, matching the map) and one Dense layer, where the class logit
    is exactly a weighted sum of channel means:

        w_c = W[c, k],    L = ReLU(Σ_c w_c A_c)

    For a single-unit sigmoid head, class 0 is explained with `-W[:, 0]`.
    """

    name = "cam"
    description = "CAM (Zhou et al. 2016): channels weighted by the GAP→Dense kernel."
    paper = "Zhou et al., CVPR 2016 (arXiv 1512.04150)"
    cost = "1 forward (reads the GAP→Dense kernel)"
    uses_gradients = False

    def prepare(self, split):
        head = [layer for layer in split.head_layers if not isinstance(layer, _INFERENCE_NO_OPS)]
        kinds = [type(layer).__name__ for layer in head]
        if (
            len(head) != 2
            or not isinstance(head[0], _GLOBAL_AVERAGE_POOLING)
            or not isinstance(head[1], layers.Dense)
        ):
            raise ValueError(
                f"method='cam' needs a head of GlobalAveragePooling2D then Dense "
                f"(GlobalAveragePooling1D or 3D for sequences or volumes) after the "
                f"target layer {split.path!r}, but the model has {kinds}. Use "
                f"method='gradcam', which works on any differentiable head."
            )
        self._dense = head[1]

    def channel_weights(self, activations, gradients, classes, forward=None):
        kernel = ops.cast(ops.stop_gradient(self._dense.kernel), activations.dtype)
        if kernel.shape[-1] == 1:
            sign = ops.cast(ops.where(classes == 1, 1.0, -1.0), activations.dtype)
            weights = kernel[:, 0][None, :] * sign[:, None]
        else:
            weights = ops.transpose(ops.take(kernel, classes, axis=1))
        return per_channel(weights, len(spatial_axes(activations)))
