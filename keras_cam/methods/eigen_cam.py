"""Eigen-CAM."""

from keras import ops

from keras_cam.methods.base import CAMMethod
from keras_cam.methods.principal import first_component_map


class EigenCAM(CAMMethod):
    """Eigen-CAM: the activations' first principal component; no gradients, no class.

    Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal
    Components", IJCNN 2020. Each location's channel vector (centred per
    channel) is projected on the first principal component of the layer's
    (h·w, C) activation matrix:

        L = ReLU(Ā v₁),    v₁ the first right singular vector of Ā

    The sign of `v₁` is arbitrary; it is chosen so that the map correlates
    positively with the mean activation over channels. The map does not
    depend on `targets`: it shows what the layer responds to most, not why a
    class was chosen.
    """

    name = "eigencam"
    description = "Eigen-CAM (Muhammad & Yeasin 2020): first principal component, class-agnostic."
    paper = "Muhammad & Yeasin, IJCNN 2020 (arXiv 2008.00299)"
    cost = "1 forward + one eigendecomposition"
    uses_gradients = False

    def weighted_activations(self, activations, gradients, classes, forward=None):
        return activations

    def cam(self, activations, gradients, classes, forward=None):
        return first_component_map(activations, ops.mean(activations, axis=-1))
