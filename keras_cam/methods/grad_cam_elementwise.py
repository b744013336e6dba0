"""Element-wise Grad-CAM."""

from keras import ops

from keras_cam.methods.base import CAMMethod


class GradCAMElementWise(CAMMethod):
    """Element-wise Grad-CAM: the positive part of gradient ⊙ activation, per location and channel.

    pytorch-grad-cam's `GradCAMElementWise` (Gildenblat et al., the
    pytorch-grad-cam library, 2021): HiResCAM with a ReLU on each channel's
    contribution before the channel sum, so channels that argue against the
    class cannot cancel those that argue for it.

        L = ReLU(Σ_c ReLU(∂S/∂A_c ⊙ A_c))
    """

    name = "gradcamelementwise"
    description = "Element-wise Grad-CAM (pytorch-grad-cam): Σ_c ReLU(gradient ⊙ activation)."
    paper = "pytorch-grad-cam (Gildenblat et al., 2021)"
    cost = "1 forward + 1 backward"

    def weighted_activations(self, activations, gradients, classes, forward=None):
        return ops.relu(gradients * activations)
