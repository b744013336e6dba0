"""`ExplainOptions`: what is explained and how, declared once for every entry point.

`CAMExplainer`, `explain()`, `sanity_check()`, `CAMCallback` and the
`keras-cam` CLI all take these options, so a new one is added here and
nowhere else (a test checks that the CLI has a flag for every field).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keras_cam.core.scores import SCORES
from keras_cam.core.tokens import TokenLayout, check_layout

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class ExplainOptions:
    """What is explained (layer, output, score) and how (smoothing, token layout, chunks).

    Every entry point takes one as `options=` and also each field as a
    keyword, which overrides it: `CAMExplainer(model, layer="conv3")` is
    `CAMExplainer(model, options=ExplainOptions(layer="conv3"))`. The values
    are checked when the options are made, before any model work.

    Args:
        layer: the target layer's name or `/`-path into nested models
            (`"resnet50/conv5_block3_out"`) or into layers called inside a
            layer (or the layer object itself) (`"vi_t_backbone/vit_encoder/transformer_block_2"`).
            Defaults to `None`: the last feature map before the head, larger
            than one position; for a vision transformer, the last token
            tensor that carries gradient on the patch tokens and is not
            hidden behind a LayerNorm.
        score: `"logit"` differentiates the pre-softmax/sigmoid value (its
            gradient does not vanish when the model is confident);
            `"probability"` the probability. Defaults to `"logit"`.
        output: which output of a multi-output model the target reads: a
            dict key, an output layer name or a position. A detection target
            reads the whole output when it is not given. Defaults to `None`
            (the only output; an error naming the outputs when there are
            several).
        tokens: how a token layer's (N, T, D) output lies on the image, a
            `keras_cam.TokenGrid(height, width, prefix=...)`, or a function
            (written with `keras.ops`) from the layer's output to an
            (N, h, w, C) map that only selects and rearranges entries.
            Defaults to `None`: read off the model's patch size, else the
            rectangle of the input's aspect that all but the fewest leading
            tokens fill.
        aug_smooth: average the maps of horizontally flipped and zoomed
            copies of each image, each mapped back to the original frame
            (6 copies: 6 times the cost). Defaults to `False`.
        eigen_smooth: replace the channel sum of each method's weighted
            activations by their first principal component, which removes
            noise spread over many channels. Defaults to `False`.
        batch_size: images explained per pass of the compiled function;
            larger batches run in chunks of this size (the last one padded,
            so nothing retraces). Defaults to `32`.

    Example:

    >>> options = keras_cam.ExplainOptions(layer="conv3", aug_smooth=True)
    >>> explainer = keras_cam.CAMExplainer(model, "gradcam", options)  # doctest: +SKIP
    >>> keras_cam.explain(model, images, options=options, output="label")  # doctest: +SKIP
    """

    layer: str | keras.layers.Layer | None = None
    score: str = "logit"
    output: str | int | None = None
    tokens: TokenLayout | None = None
    aug_smooth: bool = False
    eigen_smooth: bool = False
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {self.score!r}.")
        if self.output is not None and (
            isinstance(self.output, bool) or not isinstance(self.output, (str, int))
        ):
            raise ValueError(
                f"output must be a dict key, an output layer name or a position (a str or "
                f"an int) or None, got {self.output!r}."
            )
        check_layout(self.tokens)
        for name in ("aug_smooth", "eigen_smooth"):
            if not isinstance(getattr(self, name), (bool, int)):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}.")
            object.__setattr__(self, name, bool(getattr(self, name)))
        size = self.batch_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {size!r}.")
        object.__setattr__(self, "batch_size", int(size))


OPTION_NAMES = tuple(field.name for field in dataclasses.fields(ExplainOptions))
"""The names of `ExplainOptions`' fields, in declaration order."""


def explain_options(options: ExplainOptions | None = None, **overrides: Any) -> ExplainOptions:
    """`options` (default: `ExplainOptions()`) with the fields given as keywords replaced.

    Raises:
        TypeError: `options` is not an `ExplainOptions`, or a keyword is not
            one of its fields.
        ValueError: a value is invalid (see `ExplainOptions`).
    """
    if options is None:
        options = ExplainOptions()
    elif not isinstance(options, ExplainOptions):
        raise TypeError(
            f"options must be a keras_cam.ExplainOptions, got {type(options).__name__}; "
            f"pass its fields as keywords instead (layer=, score=, ...)."
        )
    unknown = sorted(set(overrides) - set(OPTION_NAMES))
    if unknown:
        raise TypeError(
            f"Unknown option(s) {', '.join(unknown)}; the explanation options are "
            f"{', '.join(OPTION_NAMES)} (see keras_cam.ExplainOptions)."
        )
    return dataclasses.replace(options, **overrides) if overrides else options
