"""What the attention methods (rollout, gradient-weighted rollout, LeGrad) share.

They read the attention probabilities `A_l` (N, heads, T, T) of a
transformer's blocks through `Forward.attention`, not the target layer's
activations: their map lies on the attention's token grid, whatever `layer=`
says. `blocks=` selects blocks (indices in call order, negative from the
end, or a slice) and `heads=` the heads averaged (indices); both default to
all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from keras import ops

from keras_cam.methods.base import CAMMethod


def check_selection(blocks: Any, heads: Any) -> None:
    if blocks is not None and not isinstance(blocks, (slice, Sequence)):
        raise ValueError(
            f"blocks must be None (all), a list of block indices or a slice, got {blocks!r}."
        )
    if heads is not None and (not isinstance(heads, Sequence) or not heads):
        raise ValueError(f"heads must be None (all) or a non-empty list of indices, got {heads!r}.")


class AttentionMethod(CAMMethod):
    """Base of the methods that read a transformer's attention probabilities.

    Args:
        blocks: the blocks used, as indices of the model's attention layers
            in call order (negative from the end) or a slice. Defaults to
            `None`: all.
        heads: the heads averaged, as indices. Defaults to `None`: all.
    """

    uses_gradients: ClassVar[bool] = False  # the target layer's gradients: not read
    uses_forward: ClassVar[bool] = True
    uses_attention: ClassVar[bool] = True
    has_channel_contributions: ClassVar[bool] = False
    paper: ClassVar[str]
    cost: ClassVar[str]

    def __init__(
        self, blocks: Sequence[int] | slice | None = None, heads: Sequence[int] | None = None
    ):
        check_selection(blocks, heads)
        self.blocks = blocks if blocks is None or isinstance(blocks, slice) else list(blocks)
        self.heads = None if heads is None else list(heads)

    def prepare_attention(self, layers: Any) -> None:
        layers.select(self.blocks)
        layers.check_heads(self.heads)

    def selected(self, attention: Any, per_block: Sequence[Any]) -> list[Any]:
        """The selected blocks' (N, heads, T, T) tensors, their heads restricted to `heads`."""
        return self.restricted([per_block[i] for i in attention.layers.select(self.blocks)])

    def restricted(self, per_block: Sequence[Any]) -> list[Any]:
        """(N, heads, T, T) tensors with their heads restricted to `heads`."""
        if self.heads is None:
            return list(per_block)
        index = ops.convert_to_tensor(self.heads, "int32")
        return [ops.take(tensor, index, axis=1) for tensor in per_block]
