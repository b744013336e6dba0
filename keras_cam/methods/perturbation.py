"""What Score-CAM and Ablation-CAM share: one perturbed forward pass per kept channel."""

from __future__ import annotations

from typing import Any

from keras import ops

from keras_cam.core.spatial import per_channel, spatial_axes
from keras_cam.methods.base import CAMMethod


class PerturbationMethod(CAMMethod):
    """A method that weights channels by scoring one perturbed pass per channel.

    The N·K perturbed passes (N images, K kept channels) run in chunks of
    `batch_size` through one compiled loop, the last chunk padded, so their
    cost is ceil(N·K·samples / batch_size) forward passes of the part of the network
    the method needs, and one trace.

    Args:
        batch_size: perturbed inputs per forward pass. Defaults to `64`.
        max_channels: keep only the channels with the highest mean activation
            per image (the others get weight 0). Defaults to `None`: all.
    """

    uses_gradients = False
    uses_forward = True
    # Perturbed passes per image and kept channel (SS-CAM and IS-CAM average several).
    samples: int = 1

    def __init__(self, batch_size: int = 64, max_channels: int | None = None) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
        if max_channels is not None and (not isinstance(max_channels, int) or max_channels < 1):
            raise ValueError(
                f"max_channels must be None (all channels) or an integer >= 1, "
                f"got {max_channels!r}."
            )
        self.batch_size = batch_size
        self.max_channels = max_channels

    def kept_channels(self, activations: Any) -> Any:
        """Indices (N, K) of the channels to perturb, by decreasing mean activation."""
        channels = activations.shape[-1]
        means = ops.mean(activations, axis=spatial_axes(activations))
        if self.max_channels is None or self.max_channels >= channels:
            return ops.zeros_like(means, dtype="int32") + ops.arange(channels, dtype="int32")
        return ops.cast(ops.top_k(means, self.max_channels, sorted=True)[1], "int32")

    @staticmethod
    def spread(weights: Any, channels: Any, activations: Any) -> Any:
        """Weights (N, K) of the kept `channels` -> (N, 1, ..., 1, C), 0 elsewhere."""
        count = activations.shape[-1]
        if weights.shape[-1] != count:
            weights = ops.sum(weights[..., None] * ops.one_hot(channels, count), axis=1)
        return per_channel(weights, len(spatial_axes(activations)))
