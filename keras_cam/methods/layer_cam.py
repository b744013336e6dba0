"""Layer-CAM."""

from keras import ops

from keras_cam.methods.base import CAMMethod


class LayerCAM(CAMMethod):
    """Layer-CAM: positive gradients weight each location of each channel.

    Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps
    for Localization", IEEE TIP 2021. Fine-grained enough for shallow layers.

        L = ReLU(Σ_c ReLU(∂S/∂A_c) ⊙ A_c)
    """

    name = "layercam"
    description = "Layer-CAM (Jiang et al. 2021): ReLU(gradient) × activation per location."
    paper = "Jiang et al., IEEE TIP 2021"
    cost = "1 forward + 1 backward"

    def weighted_activations(self, activations, gradients, classes, forward=None):
        return ops.relu(gradients) * activations
