"""IS-CAM."""

from __future__ import annotations

from keras import ops

from keras_cam.methods.score_cam import ScoreCAM
from keras_cam.methods.ss_cam import check_samples


class ISCAM(ScoreCAM):
    """IS-CAM: Score-CAM with each channel's score integrated over scaled copies of its mask.

    Naidu et al., "IS-CAM: Integrated Score-CAM for axiomatic-based
    explanations", arXiv 2010.03023 (TorchCAM's `ISCAM`, whose scale schedule
    this follows). With `M_c` the upsampled, min-max normalised channel `c`
    (as in Score-CAM), `N` samples and the cumulative scales
    `k_i = Σ_{j=1..i} j/N = i(i+1)/(2N)`:

        w_c = softmax_c( 1/N Σ_i S(k_i · X ⊙ M_c) ),    L = ReLU(Σ_c w_c A_c)

    (the baseline score of the paper cancels in the softmax). The scales run
    from `1/N` to `(N+1)/2`, past the input itself, as in TorchCAM's code.
    Deterministic; costs `samples` forward passes per image and kept channel.

    Args:
        samples: integration steps `N`. Defaults to `10` (TorchCAM's).
        batch_size: perturbed inputs per forward pass. Defaults to `64`.
        max_channels: keep only the channels with the highest mean
            activation. Defaults to `None`: all.

    Example:

    >>> from keras_cam.methods import ISCAM
    >>> keras_cam.explain(model, images, method=ISCAM(max_channels=64))  # doctest: +SKIP
    """

    name = "iscam"
    description = "IS-CAM (Naidu et al. 2020): Score-CAM integrated over scaled masks."
    paper = "Naidu et al., arXiv 2010.03023 (2020)"
    cost = "1 forward + samples·K forward passes per image (K = kept channels)"

    def __init__(
        self, samples: int = 10, batch_size: int = 64, max_channels: int | None = None
    ) -> None:
        super().__init__(batch_size=batch_size, max_channels=max_channels)
        self.samples = check_samples(samples)

    def perturb_masks(self, masks, samples):
        step = ops.cast(samples, masks.dtype) + 1.0
        scale = step * (step + 1.0) / (2.0 * self.samples)
        return masks * ops.reshape(scale, (-1, *[1] * (len(masks.shape) - 1)))
