"""Smooth Grad-CAM++."""

from __future__ import annotations

from keras import ops, random

from keras_cam.core.spatial import spatial_axes
from keras_cam.methods.base import CAMMethod, safe_divide


class SmoothGradCAMPlusPlus(CAMMethod):
    """Smooth Grad-CAM++: Grad-CAM++ with its derivatives averaged over noisy inputs.

    Omeiza et al., "Smooth Grad-CAM++: An Enhanced Inference Level
    Visualization Technique for Deep Convolutional Neural Network Models",
    arXiv 1908.01224 (TorchCAM's `SmoothGradCAMpp`). The gradients
    `g_s = ∂S/∂A` are taken at `S` noisy copies of the input, `X + ε_s` with
    `ε_s ~ N(0, σ²)` per input value, and Grad-CAM++'s first, second and
    third derivatives (from the exponential score, as in `GradCAMPlusPlus`)
    are their means, `D_p = 1/S Σ_s g_s^p`; `A` is the clean input's
    activation:

        α_ijc = D₂ / (2 D₂ + Σ_ab A_abc · D₃)      (0 where the denominator is 0)
        w_c = Σ_ij α_ijc · ReLU(D₁),    L = ReLU(Σ_c w_c A_c)

    The numerator is `D₂`, as in Grad-CAM++ and TorchCAM (the paper prints
    `D₁`). TorchCAM differs in two places: its denominator is
    `2 D₂ + Σ_ab A_abc D₃_abc` (one sum per channel, where Grad-CAM++ has
    `Σ_ab A_abc · D₃_ijc`), and its `ReLU` takes the last noisy sample's
    gradient instead of the mean `D₁`. The noise is drawn from `seed` alone,
    a stateless draw inside the compiled function, so the map is the same at
    every call. Costs `samples` extra forward and backward passes.

    Args:
        samples: noisy inputs `S`. Defaults to `4` (TorchCAM's).
        std: the noise's standard deviation `σ`, in the units of the model's
            input (after `preprocess`). Defaults to `0.3` (TorchCAM's, for
            ImageNet-normalised inputs).
        seed: the noise's seed. Defaults to `0`.

    Example:

    >>> from keras_cam.methods import SmoothGradCAMPlusPlus
    >>> keras_cam.explain(model, images, method=SmoothGradCAMPlusPlus(std=0.1))  # doctest: +SKIP
    """

    name = "smoothgradcam++"
    description = "Smooth Grad-CAM++ (Omeiza et al. 2019): Grad-CAM++ over noisy inputs; seeded."
    paper = "Omeiza et al., arXiv 1908.01224 (2019)"
    cost = "1 forward + samples × (1 forward + 1 backward)"
    uses_forward = True

    def __init__(self, samples: int = 4, std: float = 0.3, seed: int = 0) -> None:
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples must be an integer >= 1, got {samples!r}.")
        if isinstance(std, bool) or not isinstance(std, (int, float)) or not std >= 0:
            raise ValueError(f"std must be a number >= 0, got {std!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}.")
        self.samples, self.std, self.seed = samples, float(std), seed

    def noise(self, shape) -> object:
        """The `samples` noise tensors (S, *shape), float32: the same for one seed."""
        return random.normal((self.samples, *shape), stddev=self.std, seed=self.seed)

    def channel_weights(self, activations, gradients, classes, forward=None):
        inputs = forward.inputs
        noise = ops.cast(self.noise(tuple(inputs.shape)), inputs.dtype)
        moments = [0.0, 0.0, 0.0]
        for sample in range(self.samples):  # a few passes, unrolled in the trace
            _, noisy = forward.gradients_at(inputs + noise[sample], classes)
            for power in range(3):
                moments[power] = moments[power] + noisy ** (power + 1)
        first, second, third = (moment / self.samples for moment in moments)
        axes = spatial_axes(activations)
        activation_sums = ops.sum(activations, axis=axes, keepdims=True)
        alpha = safe_divide(second, 2.0 * second + activation_sums * third)
        return ops.sum(alpha * ops.relu(first), axis=axes, keepdims=True)
