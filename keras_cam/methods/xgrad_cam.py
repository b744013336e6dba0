"""XGrad-CAM."""

from keras import ops

from keras_cam.core.spatial import spatial_axes
from keras_cam.methods.base import CAMMethod, safe_divide


class XGradCAM(CAMMethod):
    """XGrad-CAM: gradients averaged with the activations as weights.

    Fu et al., "Axiom-based Grad-CAM: Towards Accurate Visualization and
    Explanation of CNNs", BMVC 2020.

        w_c = Σ_ij (A_ijc / Σ_ab A_abc) · ∂S/∂A_ijc,    L = ReLU(Σ_c w_c A_c)

    A channel whose activations sum to 0 gets weight 0.
    """

    name = "xgradcam"
    description = "XGrad-CAM (Fu et al. 2020): activation-weighted gradient average."
    paper = "Fu et al., BMVC 2020 (arXiv 2008.02312)"
    cost = "1 forward + 1 backward"

    def channel_weights(self, activations, gradients, classes, forward=None):
        axes = spatial_axes(activations)
        totals = ops.sum(activations, axis=axes, keepdims=True)
        return ops.sum(safe_divide(activations, totals) * gradients, axis=axes, keepdims=True)
