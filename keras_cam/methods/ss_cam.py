"""SS-CAM."""

from __future__ import annotations

from keras import ops, random

from keras_cam.methods.score_cam import ScoreCAM


def check_samples(samples: int) -> int:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1, got {samples!r}.")
    return samples


class SSCAM(ScoreCAM):
    """SS-CAM: Score-CAM with each channel's score averaged over noisy copies of its mask.

    Wang et al., "SS-CAM: Smoothed Score-CAM for Sharper Visual Feature
    Localization", arXiv 2006.14255 (TorchCAM's `SSCAM`, whose variant this
    is: the noise is added to the mask, not to the input). With `M_c` the
    upsampled, min-max normalised channel `c` (as in Score-CAM) and `δ_s`
    Gaussian noise fields of standard deviation `σ` at the input resolution:

        w_c = softmax_c( 1/S Σ_s S(X ⊙ (M_c + δ_s)) ),    L = ReLU(Σ_c w_c A_c)

    (the baseline score of the paper cancels in the softmax). The `S` noise
    fields are drawn from `seed` alone, a stateless draw inside the compiled
    function, so the map is the same at every call and independent of
    `batch_size`. Unlike TorchCAM, which draws fresh noise for every image
    and channel, the s-th field is shared by every channel and image (common
    random numbers): each weight is still an average over `S` draws of
    `N(0, σ²)` per pixel, and channels are compared under the same noise.
    Costs `samples` forward passes per image and kept channel.

    Args:
        samples: noisy masks per channel. Defaults to `35` (TorchCAM's).
        std: the noise's standard deviation `σ`, on masks in [0, 1].
            Defaults to `2.0` (TorchCAM's).
        seed: the noise's seed. Defaults to `0`.
        batch_size: perturbed inputs per forward pass. Defaults to `64`.
        max_channels: keep only the channels with the highest mean
            activation. Defaults to `None`: all.

    Example:

    >>> from keras_cam.methods import SSCAM
    >>> keras_cam.explain(model, images, method=SSCAM(samples=8, max_channels=64))  # doctest: +SKIP
    """

    name = "sscam"
    description = "SS-CAM (Wang et al. 2020): Score-CAM averaged over noisy masks; seeded."
    paper = "Wang et al., arXiv 2006.14255 (2020)"
    cost = "1 forward + samples·K forward passes per image (K = kept channels)"

    def __init__(
        self,
        samples: int = 35,
        std: float = 2.0,
        seed: int = 0,
        batch_size: int = 64,
        max_channels: int | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, max_channels=max_channels)
        if isinstance(std, bool) or not isinstance(std, (int, float)) or not std >= 0:
            raise ValueError(f"std must be a number >= 0, got {std!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}.")
        self.samples = check_samples(samples)
        self.std = float(std)
        self.seed = seed

    def noise(self, size) -> object:
        """The `samples` noise fields (S, *size), float32: the same for one seed."""
        return random.normal((self.samples, *size), stddev=self.std, seed=self.seed)

    def perturb_masks(self, masks, samples):
        # Drawn again in each chunk: a stateless draw is the same bank every time.
        noise = ops.take(self.noise(tuple(masks.shape[1:])), samples, axis=0)
        return masks + ops.cast(noise, masks.dtype)
