"""Seg-Eigen-CAM."""

from keras import ops

from keras_cam.core.spatial import map_axes
from keras_cam.methods.base import CAMMethod
from keras_cam.methods.principal import first_component_map


class SegEigenCAM(CAMMethod):
    """Seg-Eigen-CAM: the first principal component of |gradient| ⊙ activation.

    Chung & Ying, "Seg-Eigen-CAM: Eigen-Value-Based Visual Explanations for
    Semantic Segmentation Models", Applied Sciences 15(13) 7562, 2025
    (pytorch-grad-cam's `SegEigenCAM`). Eigen-Grad-CAM with two changes made
    for segmentation: the gradient enters by its magnitude, so locations
    whose gradient is negative still count (Eq. 10), and the component's
    arbitrary sign is chosen so that the map's largest magnitude is positive
    (Eq. 13):

        W = |∂S/∂A| ⊙ A,    p = W̄ v₁,    v₁ the first right singular vector of W̄
        L = ReLU(s·p),    s = -1 if |min p| > |max p| else 1

    with `W̄` the (h·w, C) matrix of `W` centred per channel. Works with any
    target (a segmentation mask's summed logits included).

    Example:

    >>> keras_cam.explain(model, images, method="segeigencam")  # doctest: +SKIP
    """

    name = "segeigencam"
    description = "Seg-Eigen-CAM (Chung & Ying 2025): first principal component of |grad| ⊙ act."
    paper = "Chung & Ying, Applied Sciences 15(13) 7562, 2025 (doi 10.3390/app15137562)"
    cost = "1 forward + 1 backward + one eigendecomposition"

    def weighted_activations(self, activations, gradients, classes, forward=None):
        return ops.abs(gradients) * activations

    def cam(self, activations, gradients, classes, forward=None):
        weighted = self.weighted_activations(activations, gradients, classes)
        projection = first_component_map(weighted, ops.sum(weighted, axis=-1))
        axes = map_axes(projection)
        low = ops.min(projection, axis=axes, keepdims=True)
        high = ops.max(projection, axis=axes, keepdims=True)
        return ops.where(ops.abs(low) > ops.abs(high), -projection, projection)
