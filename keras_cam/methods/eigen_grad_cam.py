"""Eigen-Grad-CAM."""

from keras import ops

from keras_cam.methods.base import CAMMethod
from keras_cam.methods.principal import first_component_map


class EigenGradCAM(CAMMethod):
    """Eigen-Grad-CAM: the first principal component of gradient ⊙ activation.

    pytorch-grad-cam's `EigenGradCAM`: Eigen-CAM (Muhammad & Yeasin, IJCNN
    2020) on the class-specific products `∂S/∂A ⊙ A` instead of the
    activations, so the map depends on the explained class. Each location's
    channel vector of `P = ∂S/∂A ⊙ A` (centred per channel) is projected on
    the first principal component of the (h·w, C) matrix:

        L = ReLU(P̄ v₁),    v₁ the first right singular vector of P̄

    The sign of `v₁` is arbitrary (pytorch-grad-cam leaves it to the SVD);
    here it is chosen so that the map correlates positively with HiResCAM's
    `Σ_c P_c`.
    """

    name = "eigengradcam"
    description = "Eigen-Grad-CAM (pytorch-grad-cam): first principal component of grad ⊙ act."
    paper = "pytorch-grad-cam (Gildenblat et al., 2021)"
    cost = "1 forward + 1 backward + one eigendecomposition"

    def weighted_activations(self, activations, gradients, classes, forward=None):
        return gradients * activations

    def cam(self, activations, gradients, classes, forward=None):
        products = gradients * activations
        return first_component_map(products, ops.sum(products, axis=-1))
