"""FEM, the Feature Explanation Method."""

from keras import ops

from keras_cam.core.spatial import spatial_axes
from keras_cam.methods.base import CAMMethod


class FEM(CAMMethod):
    """FEM: each channel weighted by the share of its locations above a k-sigma threshold.

    Fuad et al., "Features Understanding in 3D CNNs for Actions Recognition in
    Video", IPTA 2020 (pytorch-grad-cam's `FEM`). Gradient-free and
    class-agnostic: a channel counts where it is unusually strong for itself.
    With `μ_c` and `σ_c` the mean and (population) standard deviation of
    channel `c` over the spatial axes:

        w_c = 1/(h·w) Σ_ij [A_ijc > μ_c + k σ_c],    L = ReLU(Σ_c w_c A_c)

    Args:
        k: the threshold in standard deviations above the channel mean.
            Defaults to `2` (pytorch-grad-cam's default).

    Example:

    >>> from keras_cam.methods import FEM
    >>> keras_cam.explain(model, images, method=FEM(k=3))  # doctest: +SKIP
    """

    name = "fem"
    description = "FEM (Fuad et al. 2020): share of a channel above mean + k·std; no gradients."
    paper = "Fuad et al., IPTA 2020"
    cost = "1 forward"
    uses_gradients = False

    def __init__(self, k: float = 2.0) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, float)):
            raise ValueError(f"k must be a number of standard deviations, got {k!r}.")
        self.k = float(k)

    def channel_weights(self, activations, gradients, classes, forward=None):
        axes = spatial_axes(activations)
        threshold = ops.mean(activations, axis=axes, keepdims=True) + self.k * ops.std(
            activations, axis=axes, keepdims=True
        )
        above = ops.cast(ops.greater(activations, threshold), activations.dtype)
        return ops.mean(above, axis=axes, keepdims=True)
