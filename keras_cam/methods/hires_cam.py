"""HiResCAM."""

from keras_cam.methods.base import CAMMethod


class HiResCAM(CAMMethod):
    """HiResCAM: gradient times activation at each location, summed over channels.

    Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful
    explanations of convolutional neural networks", arXiv:2011.08891, 2020.
    No spatial pooling of the gradients, so the map shows exactly which
    locations raise the score (for a GAP→Dense head it equals CAM).

        L = ReLU(Σ_c ∂S/∂A_c ⊙ A_c)
    """

    name = "hirescam"
    description = "HiResCAM (Draelos & Carin 2020): element-wise gradient × activation."
    paper = "Draelos & Carin, arXiv 2011.08891 (2020)"
    cost = "1 forward + 1 backward"

    def weighted_activations(self, activations, gradients, classes, forward=None):
        return gradients * activations
