"""Attention rollout."""

from __future__ import annotations

from collections.abc import Sequence

from keras import ops

from keras_cam.methods.attention import AttentionMethod

_FUSIONS = ("mean", "max", "min")


def rollout_step(fused, discard_ratio: float):
    """`(Â + I) / 2`, rows renormalised, after zeroing the `discard_ratio` lowest entries.

    Args:
        fused: (N, T, T) head-fused attention of one block.
        discard_ratio: the share of entries of each item set to zero, lowest
            first, except entry (0, 0) (vit-explain's rule).
    """
    tokens = fused.shape[-1]
    if discard_ratio > 0:
        flat = ops.reshape(fused, (-1, tokens * tokens))
        rank = ops.argsort(ops.argsort(flat, axis=-1), axis=-1)
        dropped = rank < int(tokens * tokens * discard_ratio)
        dropped = ops.logical_and(dropped, ops.arange(tokens * tokens) > 0)
        fused = ops.reshape(ops.where(dropped, 0.0, flat), (-1, tokens, tokens))
    mixed = (fused + ops.eye(tokens, dtype=fused.dtype)) / 2
    return mixed / ops.sum(mixed, axis=-1, keepdims=True)


class AttentionRollout(AttentionMethod):
    """Attention rollout: how much each patch token flows into the class token through every block.

    Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020,
    arXiv 2005.00928 (jacobgil/vit-explain's `rollout` for ViTs). With `A_l`
    (heads, T, T) block `l`'s attention probabilities, fused over heads
    (mean, max or min) and the residual connection added as an identity:

        Â_l = fuse_h A_l,    Ã_l = (Â_l + I) / 2, rows renormalised to sum 1,
        R = Ã_L · ... · Ã_2 · Ã_1,    map = R[cls, patches]

    (the mean of R's rows where there is no class token). With
    `discard_ratio > 0` the lowest entries of each `Â_l` are set to 0
    first, except (0, 0), as vit-explain does. Where vit-explain divides
    `a / a.sum(dim=-1)` (a broadcast that divides each column by a row's sum)
    this divides each row by its own sum, as the paper says; both agree for
    mean fusion without discarding, where the rows already sum to 1. Class
    independent: the same map for every class. Costs one forward pass.

    Args:
        head_fusion: `"mean"`, `"max"` or `"min"` over heads. Defaults to
            `"mean"` (the paper's).
        discard_ratio: share of the lowest attention entries dropped per
            block, in [0, 1). Defaults to `0.0`.
        blocks: the blocks multiplied, as attention-layer indices in call
            order (negative from the end) or a slice. Defaults to `None`: all.
        heads: the heads fused, as indices. Defaults to `None`: all.

    Example:

    >>> from keras_cam.methods import AttentionRollout
    >>> keras_cam.explain(vit, images, method="rollout")          # doctest: +SKIP
    >>> keras_cam.explain(
    ...     vit, images, method=AttentionRollout("max", discard_ratio=0.9)
    ... )                                                          # doctest: +SKIP
    """

    name = "rollout"
    description = "Attention rollout (Abnar & Zuidema 2020): attention multiplied through blocks."
    paper = "Abnar & Zuidema, Quantifying Attention Flow in Transformers, ACL 2020"
    cost = "1 forward pass"

    def __init__(
        self,
        head_fusion: str = "mean",
        discard_ratio: float = 0.0,
        blocks: Sequence[int] | slice | None = None,
        heads: Sequence[int] | None = None,
    ) -> None:
        super().__init__(blocks, heads)
        if head_fusion not in _FUSIONS:
            raise ValueError(f"head_fusion must be one of {_FUSIONS}, got {head_fusion!r}.")
        if (
            isinstance(discard_ratio, bool)
            or not isinstance(discard_ratio, (int, float))
            or not 0 <= discard_ratio < 1
        ):
            raise ValueError(f"discard_ratio must be a number in [0, 1), got {discard_ratio!r}.")
        self.head_fusion, self.discard_ratio = head_fusion, float(discard_ratio)

    def cam(self, activations, gradients, classes, forward=None):
        attention = forward.attention
        probabilities = self.selected(attention, attention.probabilities(forward.inputs))
        fuse = {"mean": ops.mean, "max": ops.max, "min": ops.min}[self.head_fusion]
        tokens = probabilities[0].shape[-1]
        flow = ops.eye(tokens)[None]
        for block in probabilities:
            flow = ops.matmul(rollout_step(fuse(block, axis=1), self.discard_ratio), flow)
        return attention.layers.to_map(attention.layers.readout(flow))
