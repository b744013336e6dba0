"""Grad-CAM++."""

from keras import ops

from keras_cam.core.spatial import spatial_axes
from keras_cam.methods.base import CAMMethod, safe_divide


class GradCAMPlusPlus(CAMMethod):
    """Grad-CAM++: gradients weighted per location by higher-order terms.

    Chattopadhay et al., "Grad-CAM++: Generalized Gradient-Based Visual
    Explanations for Deep Convolutional Networks", WACV 2018. With the
    exponential score `Y = exp(S)` the second and third derivatives follow
    from the first, `g = ∂S/∂A`, so one backward pass suffices:

        α_ijc = g² / (2 g² + Σ_ab A_abc · g³)      (0 where the denominator is 0)
        w_c = Σ_ij α_ijc · ReLU(g_ijc),    L = ReLU(Σ_c w_c A_c)

    (the common factor `exp(S)` is dropped: it does not change the map's shape).
    """

    name = "gradcam++"
    description = "Grad-CAM++ (Chattopadhay et al. 2018): higher-order gradient weights."
    paper = "Chattopadhay et al., WACV 2018 (arXiv 1710.11063)"
    cost = "1 forward + 1 backward"

    def channel_weights(self, activations, gradients, classes, forward=None):
        axes = spatial_axes(activations)
        squared = gradients * gradients
        activation_sums = ops.sum(activations, axis=axes, keepdims=True)
        alpha = safe_divide(squared, 2.0 * squared + activation_sums * squared * gradients)
        return ops.sum(alpha * ops.relu(gradients), axis=axes, keepdims=True)
