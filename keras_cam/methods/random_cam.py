"""Random-CAM, a baseline."""

from keras import ops, random

from keras_cam.core.spatial import per_channel, spatial_axes
from keras_cam.methods.base import CAMMethod


class RandomCAM(CAMMethod):
    """Random-CAM: channels weighted by uniform noise in [-1, 1]; a baseline, not an explanation.

    pytorch-grad-cam's `RandomCAM`, the floor for the sanity checks and the
    metrics: a method that scores no better than this shows nothing about the
    model. The weights are drawn from `seed` alone (a stateless draw, the same
    inside compiled functions on every backend), so the same batch size gives
    the same weights at every call:

        w_nc ~ U(-1, 1),    L = ReLU(Σ_c w_nc A_c)

    Args:
        seed: the random seed. Defaults to `0`.

    Example:

    >>> from keras_cam.methods import RandomCAM
    >>> keras_cam.explain(model, images, method=["gradcam", RandomCAM(seed=1)])  # doctest: +SKIP
    """

    name = "randomcam"
    description = "Random-CAM (pytorch-grad-cam): uniform random channel weights; a baseline."
    paper = "pytorch-grad-cam (Gildenblat et al., 2021); a baseline"
    cost = "1 forward"
    uses_gradients = False

    def __init__(self, seed: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}.")
        self.seed = seed

    def channel_weights(self, activations, gradients, classes, forward=None):
        images, channels = activations.shape[0], activations.shape[-1]
        weights = random.uniform((images, channels), -1.0, 1.0, seed=self.seed)
        weights = ops.cast(weights, activations.dtype)
        return per_channel(weights, len(spatial_axes(activations)))
