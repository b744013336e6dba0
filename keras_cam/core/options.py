"""What is explained and how: the one declaration shared by explainer, explain(), callback and CLI.

(Minimal version for the callback; pipe-core's full version replaces it.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keras_cam.core.tokens import TokenLayout, check_layout

SCORES = ("logit", "probability")


@dataclass(frozen=True)
class ExplainOptions:
    """Which layer and score are explained, and how the maps are smoothed.

    Args:
        layer: target layer name or `/`-path. Defaults to `None` (automatic).
        score: `"logit"` or `"probability"`. Defaults to `"logit"`.
        output: which output of a multi-output model. Defaults to `None`.
        tokens: how a token layer's output lies on the image (`keras_cam.TokenGrid`).
            Defaults to `None`: detected from the model.
        aug_smooth: average over flipped and zoomed copies. Defaults to `False`.
        eigen_smooth: first principal component smoothing. Defaults to `False`.
        batch_size: images per pass of the compiled function. Defaults to `32`.

    Example:

    >>> keras_cam.ExplainOptions(layer="conv3", batch_size=8)  # doctest: +SKIP
    """

    layer: str | None = None
    score: str = "logit"
    output: str | int | None = None
    tokens: TokenLayout | None = None
    aug_smooth: bool = False
    eigen_smooth: bool = False
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {self.score!r}.")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int):
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}.")
        check_layout(self.tokens)

    def as_kwargs(self) -> dict[str, Any]:
        """The fields as keyword arguments of `CAMExplainer`."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}
