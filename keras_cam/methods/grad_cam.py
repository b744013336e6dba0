"""Grad-CAM."""

from keras import ops

from keras_cam.core.spatial import spatial_axes
from keras_cam.methods.base import CAMMethod


class GradCAM(CAMMethod):
    """Grad-CAM: channels weighted by their spatially averaged gradient.

    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017.

        w_c = 1/(h·w) Σ_ij ∂S/∂A_ijc,    L = ReLU(Σ_c w_c A_c)

    (the mean runs over every spatial axis: time for a 1-D map, depth, height
    and width for a 3-D one).
    """

    name = "gradcam"
    description = "Grad-CAM (Selvaraju et al. 2017): channels weighted by mean gradient."
    paper = "Selvaraju et al., ICCV 2017 (arXiv 1610.02391)"
    cost = "1 forward + 1 backward"

    def channel_weights(self, activations, gradients, classes, forward=None):
        return ops.mean(gradients, axis=spatial_axes(gradients), keepdims=True)
