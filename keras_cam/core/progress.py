"""The progress bar of `explain()`, the Keras way: `verbose=` as in `model.predict`.

A Grad-CAM call costs about one forward pass, but Score-CAM and Ablation-CAM
run one masked forward pass per channel and image (2048 per image at
ResNet50's last block): minutes on a CPU. The bar is a `keras.utils.Progbar`
counted in forward passes and shows the planned total as soon as the call
starts, so a long call says up front how long it will be. It advances as each
chunk of masked passes finishes: the compiled function reports every chunk to
the host (`compute.*.after_chunk`) through `CAMExplainer.on_passes`, which is
read at run time, so showing the bar never retraces.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import keras

from keras_cam.methods.perturbation import PerturbationMethod


def resolve_verbose(verbose: Any) -> int:
    """0 (silent), 1 (progress bar) or 2 (one line at the end) from `verbose=`.

    `"auto"` is 1 where the output is read live (a terminal, IPython or a
    notebook) and 0 elsewhere (logs, pipes, test runs), so output stays clean.
    """
    if isinstance(verbose, str) and verbose == "auto":
        interactive = sys.stdout is not None and sys.stdout.isatty()
        return 1 if interactive or "IPython" in sys.modules else 0
    if isinstance(verbose, bool) or verbose not in (0, 1, 2):
        raise ValueError(
            f"verbose must be 'auto', 0, 1 or 2 (as in model.predict), got {verbose!r}."
        )
    return int(verbose)


def planned_passes(explainer: Any, images: int) -> int:
    """Forward passes of one call: one per image, plus one per kept channel and image for
    each perturbation method (Score-CAM, Ablation-CAM; Ablation-CAM's are cheap where the
    head starts with pooling and a Dense layer, which it updates in closed form).

    An image counts once per augmented copy (`aug_smooth`), and a last chunk of
    `batch_size` images is padded to full size: its padding runs too.
    """
    split = explainer.resolved
    shape = split.layer.output.shape
    channels = int(shape[1] if split.channels_first else shape[-1])
    chunk = min(explainer.batch_size or images, images)
    items = -(-images // chunk) * chunk * split.passes_per_image
    kept = [
        min(method.max_channels or channels, channels) * method.samples
        for method in explainer.methods
        if isinstance(method, PerturbationMethod)
    ]
    return items * (1 + sum(kept))


@contextmanager
def progress_bar(explainer: Any, images: int, verbose: int) -> Iterator[None]:
    """Shows a `Progbar` of the call's forward passes around the body (nothing at verbose 0)."""
    if verbose == 0:
        yield
        return
    try:
        passes = planned_passes(explainer, images)
        unit = "pass"
    except Exception:  # not built yet, or a layer without a static shape: count images
        passes, unit = images, "image"
    bar = keras.utils.Progbar(passes, verbose=verbose, unit_name=unit)
    bar.update(0)
    if unit == "pass":
        explainer.on_passes = bar.add
    try:
        yield
    finally:
        explainer.on_passes = None
    bar.update(passes, finalize=True)
