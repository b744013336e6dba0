"""The `keras-cam` command: explain a saved model on a folder of images.

    keras-cam explain model.keras photos/ --out cams/
    keras-cam methods
    keras-cam --version

Keras (and its backend) is imported only once the arguments are parsed and the
inputs found, so `--help`, `--version` and argument errors answer at once.
Messages go to stderr through the `keras_cam.cli.command` logger; the progress bar and
the final summary go to stdout.

Exit status of `explain`: 0 when at least one image was explained and nothing
failed unexpectedly (undecodable image files are skipped, not failures); 1 when
no image was explained, or explaining some batch raised an error; 2 for a
command-line error (unknown option, method, preprocessing or target, no such
input, a non-empty `--out` without `--overwrite`, an `--out` another run holds or
whose outputs would hold an input, `--resume` with other options, a layer the model
lacks, class names that do not match the model); 3 when the model file is missing or
Keras cannot load it; 130 when interrupted (what was done so far is written).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keras_cam import __version__
from keras_cam.cli import trackers
from keras_cam.cli.image_files import (
    FITS,
    IMAGE_EXTENSIONS,
    LoadedImage,
    UnreadableImage,
    find_images,
    load_image,
)
from keras_cam.cli.methods_list import write_methods
from keras_cam.diagnostics import registry
from keras_cam.render.contact_sheet import SheetRow, contact_sheet_html
from keras_cam.sinks.event import Event, Sink, write_all
from keras_cam.sinks.folder import FolderRecord, FolderSink
from keras_cam.sinks.folder_state import (
    STATE_FOLDER,
    FolderInUseError,
    OwnedFolder,
    deferred_interrupt,
)

logger = logging.getLogger("keras_cam.cli.command")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_MODEL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

PREPROCESSING = (
    "none",
    "scale",
    "convnext",
    "densenet",
    "efficientnet",
    "efficientnet_v2",
    "inception_resnet_v2",
    "inception_v3",
    "mobilenet",
    "mobilenet_v2",
    "mobilenet_v3",
    "nasnet",
    "resnet",
    "resnet50",
    "resnet_v2",
    "vgg16",
    "vgg19",
    "xception",
)
"""`--preprocess` names: `none`, `scale` (÷255) and the `keras.applications` modules."""

TASKS = ("auto", "classification", "regression")
DEFAULT_METRICS = ("focus", "average_drop", "increase_in_confidence")
# The metrics of one folder of images: those that need no masks, labels or earlier event
# ("explain", ARCC's re-run of the method, is the command's own explainer).
_OFFLINE = ("masks", "labels", "previous")

# The files this command writes into --out, through its folder sink: every file and
# folder it creates is also listed in .keras-cam/manifest.txt; --overwrite removes the
# listed ones and nothing else.
OUTPUTS = ("overlays", "images", "results.csv", "index.html", "skipped.txt", "status.json")
_FOLDERS = ("overlays", "images")
# One event per input image: its thumbnail (tag "image"), one overlay per method and rank.
_PATTERNS = {"image": "images/{stem}.jpg", "*": "overlays/{stem}_{tag}.png"}
# Options that may differ between an interrupted run and its --resume.
_RESUME_FREE = ("command", "resume", "overwrite", "quiet", "out")


class UsageError(Exception):
    """A command-line problem found after parsing: exit status 2."""


class ModelError(Exception):
    """The model cannot be loaded: exit status 3."""


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) in (1, 2) and all(part.strip().isdigit() for part in parts):
        values = [int(part) for part in parts]
        if min(values) >= 1:
            return (values[0], values[-1])
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a size: write N for N×N or HEIGHTxWIDTH, e.g. 224 or 224x320"
    )


def _positive(text: str) -> int:
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")


def _token_grid(text: str) -> Any:
    """`--tokens HxW[+P]`: a `TokenGrid` of H×W patches after P prefix tokens."""
    grid, _, prefix = text.lower().replace("×", "x").partition("+")
    parts = grid.split("x")
    if (
        len(parts) == 2
        and all(p.strip().isdigit() for p in parts)
        and (not prefix or prefix.strip().isdigit())
    ):
        from keras_cam.core.tokens import TokenGrid

        try:
            return TokenGrid(int(parts[0]), int(parts[1]), prefix=int(prefix or 0))
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a token grid: write HEIGHTxWIDTH or HEIGHTxWIDTH+PREFIX, e.g. 14x14+1"
    )


def _number(text: str) -> float:
    """A finite number; `A/B` is read as a fraction (`1/255`)."""
    numerator, slash, denominator = text.partition("/")
    try:
        value = float(numerator) / float(denominator) if slash else float(text)
    except (ValueError, ZeroDivisionError):
        value = float("nan")
    if np.isfinite(value):
        return value
    raise argparse.ArgumentTypeError(f"{text!r} is not a finite number (e.g. 0.5 or 1/255)")


def _numbers(text: str) -> tuple[float, ...]:
    """One number, or one per channel: `0.485,0.456,0.406`."""
    return tuple(_number(part.strip()) for part in text.split(","))


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if 0.0 <= value <= 1.0:
        return value
    raise argparse.ArgumentTypeError(f"{text!r} is not a number in [0, 1]")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: ...)" after every option that has a default worth printing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or action.required:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `keras-cam` (no Keras import)."""
    parser = argparse.ArgumentParser(
        prog="keras-cam",
        description="Class activation maps (Grad-CAM and family) of a saved Keras model.",
        epilog="The backend is Keras': set KERAS_BACKEND=tensorflow|jax|torch.",
    )
    parser.add_argument("--version", action="version", version=f"keras-cam {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("methods", help="list the CAM methods, one line each")
    explain = commands.add_parser(
        "explain",
        help="explain a saved model on image files, folders or globs",
        description=(
            "Explain a saved model on images: one captioned overlay PNG per image and "
            "method, results.csv and index.html (a contact sheet that opens from disk) "
            "in --out."
        ),
        epilog=(
            "Exit status: 0 at least one image explained and none failed unexpectedly "
            "(undecodable files are skipped and listed in skipped.txt); 1 no image "
            "explained, or an error while explaining; 2 command-line error; 3 the model "
            "cannot be loaded; 130 interrupted."
        ),
        formatter_class=_HelpFormatter,
    )
    explain.add_argument(
        "model", metavar="MODEL", help="a .keras file (or .h5 where Keras can load it)"
    )
    explain.add_argument(
        "images",
        metavar="IMAGES",
        nargs="+",
        help=(
            "image files, folders (searched recursively for "
            f"{', '.join(IMAGE_EXTENSIONS)}) or glob patterns (quote them; ** recurses)"
        ),
    )
    explain.add_argument("--out", required=True, metavar="DIR", help="output folder")
    explain.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --out, replacing this command's earlier outputs",
    )
    explain.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run into --out (same options), skipping the images "
        "it has done",
    )
    explain.add_argument(
        "--method",
        action="append",
        metavar="NAME[,NAME...]",
        help="CAM method(s); repeat the option or give a comma list (see `keras-cam "
        "methods`) (default: gradcam)",
    )
    explain.add_argument(
        "--layer",
        default=None,
        help="target layer name or /-path (default: the last 4-D layer before the head)",
    )
    explain.add_argument(
        "--score",
        choices=("logit", "probability"),
        default="logit",
        help="differentiate the pre-softmax logit or the probability",
    )
    explain.add_argument(
        "--tokens",
        type=_token_grid,
        default=None,
        metavar="HxW[+P]",
        help="how a token layer lies on the image: H×W patches after P prefix tokens, e.g. "
        "14x14+1 (default: read off the model)",
    )
    explain.add_argument(
        "--aug-smooth",
        action="store_true",
        help="average the maps of flipped and zoomed copies (6 times the cost)",
    )
    explain.add_argument(
        "--eigen-smooth",
        action="store_true",
        help="first principal component of the weighted activations instead of their sum",
    )
    explain.add_argument(
        "--targets",
        default="predicted",
        help="'predicted', 'topK' (the K best classes, e.g. top3), a class index, "
        "or a class name from --class-names",
    )
    explain.add_argument(
        "--preprocess",
        default="none",
        metavar="NAME|MODULE:FUNCTION",
        help="maps pixels 0-255 to model input: 'none' (as they are), 'scale' (÷255), "
        f"a keras.applications family ({', '.join(PREPROCESSING[2:])}), or your own "
        "function, imported: e.g. 'mypackage.data:preprocess' (a module on PYTHONPATH or "
        "in the current folder) takes a float32 batch (N, H, W, C) of 0-255 pixels and "
        "returns the model's input",
    )
    explain.add_argument(
        "--scale",
        type=_number,
        default=None,
        metavar="FACTOR",
        help="input = (pixels × FACTOR - --mean) / --std, per channel; e.g. "
        "--scale 1/255 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 (ImageNet "
        "normalisation) (default: 1)",
    )
    explain.add_argument(
        "--mean",
        type=_numbers,
        default=None,
        metavar="M[,M...]",
        help="subtracted after --scale: one value, or one per channel (default: 0)",
    )
    explain.add_argument(
        "--std",
        type=_numbers,
        default=None,
        metavar="S[,S...]",
        help="divides after --mean: one value, or one per channel (default: 1)",
    )
    explain.add_argument(
        "--output",
        default=None,
        metavar="KEY",
        help="for a model with several outputs, the one to explain: a dict key, an "
        "output layer name or a position (0, 1, ...)",
    )
    explain.add_argument(
        "--task",
        choices=TASKS,
        default="auto",
        help="'classification' reports classes and probabilities; 'regression' explains "
        "the output value itself (what increases it) and reports it as 'value'. 'auto': "
        "regression for one linear output unit, else classification",
    )
    explain.add_argument(
        "--size",
        type=_size,
        default=None,
        metavar="N|HxW",
        help="input size (default: the model's input size)",
    )
    explain.add_argument(
        "--fit",
        choices=FITS,
        default="crop",
        help="how images reach --size: 'crop' scales to cover it and cuts the centre, "
        "'pad' scales to fit inside and pads with black; both keep the aspect ratio. "
        "'stretch' ignores it",
    )
    explain.add_argument(
        "--class-names",
        metavar="FILE",
        default=None,
        help="a text file with one class name per line, in class-index order "
        "(default: class indices as names)",
    )
    explain.add_argument(
        "--batch-size",
        type=_positive,
        default=32,
        metavar="N",
        help="images per batch (read, explain, write) and per pass of the CAM function",
    )
    explain.add_argument(
        "--limit",
        type=_positive,
        default=None,
        metavar="N",
        help="explain only the first N images (default: all)",
    )
    explain.add_argument(
        "--alpha", type=_alpha, default=0.4, help="weight of the heatmap colour in the overlay"
    )
    explain.add_argument("--colormap", default="jet", help="a matplotlib colormap name")
    explain.add_argument(
        "--metrics",
        default=None,
        metavar="NAME[,NAME...]",
        help=f"per-map metrics in results.csv, from "
        f"{', '.join(registry.metric_names(without=_OFFLINE))}, or 'none' "
        f"(default: {','.join(DEFAULT_METRICS)}; focus for a regression). "
        "average_drop and increase_in_confidence cost 2 forward passes of the batch "
        "each, deletion and insertion 18",
    )
    explain.add_argument("--quiet", action="store_true", help="no progress bar")
    trackers.add_arguments(explain)
    return parser


@dataclass
class _Run:
    """What `explain` has done so far: skipped and failed files; the sinks written to.

    What was explained is what the folder sink recorded (`folder.records`).
    """

    methods: list[str]
    folder: FolderSink | None = None
    sinks: list[Sink] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    conversions: set[str] = field(default_factory=set)
    regression: bool = False
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    not_processed: list[str] = field(default_factory=list)

    @property
    def explained(self) -> int:
        return sum(not record.texts for record in self.folder.records)

    @property
    def flat(self) -> int:
        """Maps without a peak (a flat map leaves the peak cells empty)."""
        rows = [row for record in self.folder.records for row in record.rows]
        return sum(row["peak_x"] is None for row in rows)


def _methods(values: Sequence[str] | None) -> list[str]:
    names = [name for value in values or ["gradcam"] for name in _comma_list(value)]
    if not names:
        raise UsageError("--method is empty; name at least one method (see `keras-cam methods`).")
    return names


def _metrics(text: str | None) -> list[str]:
    if text is None:
        return list(DEFAULT_METRICS)
    names = [] if text.strip().lower() == "none" else _comma_list(text)
    available = registry.metric_names(without=_OFFLINE)
    unknown = [name for name in names if name not in available]
    if unknown:
        raise UsageError(
            f"Unknown metric(s) {', '.join(unknown)}; choose from {', '.join(available)} or 'none'."
        )
    return names


def _shown(path: str) -> str:
    """`path` as text for reports: bytes that are not UTF-8 shown as `\\xff`."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _real(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


def _check_out(folder: OwnedFolder, overwrite: bool, resume: bool) -> None:
    out = folder.directory
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} is a file; name a folder.")
    if resume:
        if overwrite:
            raise UsageError("--resume continues a run and --overwrite replaces it: pick one.")
        if not folder.is_ours("status.json"):
            raise UsageError(
                f"--resume: --out {out} holds no keras-cam run to continue (no status.json "
                f"written by keras-cam); leave --resume out to start one."
            )
        return
    if folder.contents() and not overwrite:
        raise UsageError(
            f"--out {out} is not empty; choose another folder or pass --overwrite "
            f"(which removes only the files an earlier keras-cam run wrote there), or "
            f"--resume to continue an interrupted run."
        )
    foreign = [
        name for name in OUTPUTS if os.path.lexists(folder.path(name)) and not folder.is_ours(name)
    ]
    if foreign:
        raise UsageError(
            f"--out {out} holds {', '.join(foreign)}, which keras-cam did not write (they "
            f"are not in {STATE_FOLDER}/manifest.txt) and which it would write into; --overwrite "
            f"never touches files it did not create: choose another --out."
        )


def _check_inputs(folder: OwnedFolder, specs: Sequence[str], files: Sequence[str]) -> None:
    """Refuses inputs that lie inside what the command writes into --out."""
    out = _real(folder.directory)
    written = [os.path.join(out, name) for name in (*_FOLDERS, STATE_FOLDER)]
    fixed = {os.path.join(out, name) for name in OUTPUTS if name not in _FOLDERS}

    def inside(path: str) -> bool:
        real = _real(path)
        return real in fixed or any(
            real == place or real.startswith(place + os.sep) for place in written
        )

    clash = [spec for spec in specs if os.path.isdir(spec) and inside(spec)]
    clash += [path for path in files if inside(path)]
    if clash:
        raise UsageError(
            f"Input {_shown(clash[0])} lies inside what keras-cam writes into --out "
            f"{folder.directory} ({', '.join(OUTPUTS)}); choose an --out outside your input "
            f"folders, e.g. a new folder next to them."
        )


def _load_model(path: str) -> Any:
    import keras

    if not os.path.exists(path):
        raise ModelError(f"No model at {path}: the file does not exist.")
    if os.path.isdir(path):
        raise ModelError(
            f"{path} is a folder (a TensorFlow SavedModel?). Keras 3 loads a SavedModel only "
            f"as an opaque layer, with no inner layers to explain: load it in the program "
            f"that built it and save it with model.save('model.keras')."
        )
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:
        raise ModelError(
            f"Keras cannot load {path}: {type(error).__name__}: {error}. Pass a model "
            f"saved with model.save('model.keras') (or a full-model .h5)."
        ) from error


def _select_output(model: Any, spec: str | None) -> Any:
    """The model reduced to the output `--output` names (the model itself when it has one).

    Everything downstream (the explainer, the probability, the metrics) then
    sees a model with one output.
    """
    import keras

    from keras_cam.core import outputs

    named = outputs.describe(model)
    count = len(model.outputs)
    if spec is None:
        if count == 1:
            return model
        raise UsageError(
            f"The model has {count} outputs: {named}. Choose the one to explain with "
            f"--output (a dict key, an output layer name or a position), e.g. --output 0."
        )
    choice: str | int = spec
    try:
        key = outputs.resolve(model, choice)
    except ValueError:
        if not spec.isdigit():
            raise UsageError(f"--output {spec!r} is not an output of the model: {named}.") from None
        choice = int(spec)
        try:
            key = outputs.resolve(model, choice)
        except ValueError:
            raise UsageError(
                f"--output {spec}: the model has outputs 0 to {count - 1}: {named}."
            ) from None
    if count == 1:
        return model
    return keras.Model(model.inputs, outputs.symbolic(model, key), name=model.name)


def _is_regression(model: Any, task: str) -> bool:
    """`--task`, or for `auto`, whether the head is one linear unit (an age, a price)."""
    import keras

    from keras_cam.core.scores import head_layer, output_activation

    if task != "auto":
        return task == "regression"
    output = model.outputs[0]
    head = head_layer(output)
    linear = getattr(head, "activation", None) is keras.activations.linear
    if (
        len(output.shape) == 2
        and output.shape[-1] == 1
        and linear
        and output_activation(head) is None
    ):
        logger.info(
            "the model ends in one linear unit (%s): explaining it as a regression (the "
            "value and what increases it); pass --task classification for a binary "
            "classifier that outputs a logit",
            head.name,
        )
        return True
    return False


def _with_probabilities(model: Any) -> Any:
    """The model with a softmax (sigmoid for one unit) appended when its head is linear.

    The head is found through pass-through layers (Reshape, Flatten, Dropout)
    and nested models, as the library finds it, so a softmax that is not on
    the last layer is never applied twice. The explainer differentiates the
    logits either way (the appended activation is switched off while it
    traces), so the maps are unchanged; the reported scores become
    probabilities. A head the library cannot read (a Lambda, a custom layer)
    is left as it is.
    """
    import keras

    from keras_cam.core.scores import confidence_activation, head_layer, output_activation

    outputs = model.outputs[0]
    if len(model.outputs) != 1 or len(outputs.shape) != 2:
        return model
    head = head_layer(outputs)
    if output_activation(head) is not None:
        return model
    activation = confidence_activation(head, outputs.shape[-1])
    if activation is None:
        logger.info(
            "the model's output layer %r has no softmax/sigmoid that keras-cam can read: "
            "its outputs are reported as they are",
            getattr(head, "name", "?"),
        )
        return model
    logger.info(
        "the model's output has no softmax: probabilities are the %s of its outputs", activation
    )
    if activation == "sigmoid":
        layer = keras.layers.Activation("sigmoid", name="keras_cam_probability")
    else:
        layer = keras.layers.Softmax(name="keras_cam_probability")
    return keras.Model(model.inputs, layer(outputs), name=model.name)


CHANNEL_MODES = {1: "grayscale", 3: "RGB", 4: "RGBA"}


def _input_size(
    model: Any, requested: tuple[int, int] | None, channels_first: bool
) -> tuple[tuple[int, int], int]:
    """The (height, width) images are fitted to, and the model's channel count (1, 3 or 4)."""
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4:
        raise UsageError(f"The model takes input of shape {shape}, not images (N, H, W, C).")
    size = shape[2:4] if channels_first else shape[1:3]
    channels = shape[1] if channels_first else shape[3]
    if channels not in CHANNEL_MODES:
        raise UsageError(
            f"The model takes images with {channels} channels; keras-cam reads image files "
            f"as grayscale (1 channel), RGB (3) or RGBA (4)."
        )
    if requested is not None:
        if any(s is not None and s != r for s, r in zip(size, requested, strict=True)):
            raise UsageError(
                f"--size {requested[0]}x{requested[1]} does not match the model's input "
                f"size {size[0]}x{size[1]}; leave --size out."
            )
        return requested, int(channels)
    if None in size:
        raise UsageError("The model accepts any input size: give one with --size, e.g. 224.")
    return (int(size[0]), int(size[1])), int(channels)


def explain_options(args: argparse.Namespace) -> Any:
    """The `ExplainOptions` of the command line: one flag per field, named after it."""
    from keras_cam.core.options import OPTION_NAMES, ExplainOptions

    values = {name: getattr(args, name) for name in OPTION_NAMES}
    if isinstance(values["output"], str) and values["output"].isdigit():
        values["output"] = int(values["output"])  # a position (`_select_output` tries a name first)
    return ExplainOptions(**values)


def _class_names(path: str | None, num_classes: int) -> list[str]:
    if path is None:
        return [str(index) for index in range(num_classes)]
    try:
        with open(path, encoding="utf-8") as file:
            names = [line.strip() for line in file if line.strip()]
    except OSError as error:
        raise UsageError(f"Cannot read --class-names {path}: {error}.") from error
    if len(names) != num_classes:
        raise UsageError(
            f"--class-names {path} has {len(names)} names but the model scores "
            f"{num_classes} classes; give one name per line, in class-index order."
        )
    return names


def _targets(text: str, names: list[str]) -> str | int:
    from keras_cam.targets.tasks import top_k

    if text == "predicted":
        return text
    if text.startswith("top"):
        try:
            top_k(text)
        except ValueError as error:
            raise UsageError(f"--targets: {error}") from None
        return text
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < len(names):
            raise UsageError(f"--targets {index}: the model has classes 0 to {len(names) - 1}.")
        return index
    if text in names:
        return names.index(text)
    raise UsageError(
        f"--targets {text!r}: write 'predicted', 'topK' (e.g. top3), a class index "
        f"or one of the --class-names."
    )


def _regression_targets(model: Any, args: argparse.Namespace) -> tuple[list[str], Any]:
    """Unit names and the target of a regression: the value itself, `--targets N` for unit N."""
    from keras_cam.targets import output

    units = int(np.prod(model.outputs[0].shape[1:]))
    if args.class_names is not None:
        raise UsageError("--class-names names classes; a regression head has none: leave it out.")
    if args.targets == "predicted" and units == 1:
        return ["value"], output(0)
    if args.targets.isdigit() and int(args.targets) < units:
        return [f"unit {i}" for i in range(units)], output(int(args.targets))
    raise UsageError(
        f"--targets {args.targets}: a regression output with {units} unit(s) is explained one "
        f"unit at a time: give its index, 0 to {units - 1}"
        + (" (or leave --targets out)." if units == 1 else ".")
    )


def _regression_metrics(text: str | None) -> list[str]:
    """Only `focus` reads a map alone; the others compare class probabilities."""
    if text is None:
        return ["focus"]
    names = _metrics(text)
    others = [name for name in names if name != "focus"]
    if others:
        raise UsageError(
            f"--metrics {','.join(others)} compare class probabilities; a regression has "
            f"none: use --metrics focus or none."
        )
    return names


def _user_function(spec: str) -> Callable[[np.ndarray], Any]:
    """Imports `module:function` (the current folder is searched too, as `python -m` does)."""
    import importlib

    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise UsageError(f"--preprocess {spec!r}: write MODULE:FUNCTION, e.g. mypackage.data:prep.")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise UsageError(
            f"--preprocess {spec}: cannot import {module_name!r} ({type(error).__name__}: "
            f"{error}); run from the folder that holds it or add it to PYTHONPATH."
        ) from None
    function = getattr(module, name, None)
    if not callable(function):
        raise UsageError(f"--preprocess {spec}: module {module_name!r} has no function {name!r}.")
    return lambda images: function(np.asarray(images, np.float32))


def _normalisation(
    scale: float | None, mean: Sequence[float] | None, std: Sequence[float] | None, channels: int
) -> Callable[[np.ndarray], Any]:
    """(pixels × scale − mean) / std, per channel."""
    factor = 1.0 if scale is None else scale

    def per_channel(values: Sequence[float] | None, default: float, option: str) -> np.ndarray:
        if values is None:
            return np.full(channels, default, np.float32)
        if len(values) not in (1, channels):
            raise UsageError(
                f"{option} has {len(values)} values; give one, or one per channel (the model "
                f"takes {channels})."
            )
        return np.broadcast_to(np.asarray(values, np.float32), (channels,)).copy()

    shift = per_channel(mean, 0.0, "--mean")
    spread = per_channel(std, 1.0, "--std")
    if np.any(spread == 0):
        raise UsageError("--std must not be 0.")
    return lambda images: (np.asarray(images, np.float32) * factor - shift) / spread


def _preprocess(args: argparse.Namespace, channels: int) -> Callable[[np.ndarray], Any] | None:
    """The function from pixels (0-255, the model's channels) to the model's input."""
    name = args.preprocess
    custom = [args.scale, args.mean, args.std]
    if any(value is not None for value in custom):
        if name != "none":
            raise UsageError(
                f"--preprocess {name} and --scale/--mean/--std both say how to preprocess: "
                f"give one of them."
            )
        return _normalisation(args.scale, args.mean, args.std, channels)
    if ":" in name:
        return _user_function(name)
    if name not in PREPROCESSING:
        raise UsageError(
            f"--preprocess {name!r}: choose from {', '.join(PREPROCESSING)}, or name your own "
            f"function as MODULE:FUNCTION."
        )
    if name == "none":
        return None
    if name == "scale":
        return lambda images: images / 255.0
    if channels != 3:
        raise UsageError(
            f"--preprocess {name} expects RGB images; the model takes {channels} channel(s). "
            f"Use --scale/--mean/--std or your own MODULE:FUNCTION."
        )
    import keras

    return getattr(keras.applications, name).preprocess_input


def _display(pixels: np.ndarray) -> np.ndarray:
    """RGB for the thumbnails and overlays: gray repeated, RGBA shown on white."""
    if pixels.shape[-1] == 1:
        return np.repeat(pixels, 3, axis=-1)
    if pixels.shape[-1] == 4:
        alpha = pixels[..., 3:].astype(np.float32) / 255.0
        shown = pixels[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.round(shown).astype(np.uint8)
    return pixels


def _peak(heatmap: np.ndarray) -> tuple[int, int] | None:
    """(x, y) of the map's maximum; None for a flat map, which has no peak."""
    if not np.ptp(heatmap) > 0:  # also False for a NaN map
        return None
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(col), int(row)


def _per_image_metrics(
    names: Sequence[str],
    model: Any,
    images: np.ndarray,
    heatmaps: np.ndarray,
    classes: np.ndarray,
    preprocess: Callable[[np.ndarray], Any] | None,
    explain: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    inputs = registry.MetricInputs(
        maps=heatmaps,
        classes=classes,
        model=model,
        images=images,
        preprocess=preprocess,
        batch_size=len(images),
        explain=explain,
    )
    return {name: registry.get_metric(name).compute(inputs) for name in names}


@dataclass(frozen=True)
class _MethodMaps:
    """One method's output for a batch, per image and class rank: (N, ranks, ...)."""

    heatmaps: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    metrics: dict[str, np.ndarray]


class _Explainer:
    """Runs the batches: one `CAMExplainer`, fixed batch shape, outputs written per batch.

    Everything that can refuse the command line (model, layer, size, class
    names, targets, colormap) is checked here, before anything is written.
    """

    def __init__(self, args: argparse.Namespace, run: _Run, count: int) -> None:
        from keras_cam import CAMExplainer
        from keras_cam.methods import get_method
        from keras_cam.render.overlay import colorize
        from keras_cam.targets.tasks import top_k

        for name in run.methods:
            try:
                get_method(name)
            except ValueError as error:
                raise UsageError(str(error)) from None
        try:
            colorize(np.zeros((1, 1, 1)), args.colormap)
        except ValueError as error:
            raise UsageError(str(error)) from None
        self.args, self.run = args, run
        # A run of fewer files than --batch-size is not padded up to it.
        self.batch_size = min(args.batch_size, count)
        model = _select_output(_load_model(args.model), args.output)
        self.regression = _is_regression(model, args.task)
        self.model = model if self.regression else _with_probabilities(model)
        try:
            options = explain_options(args)
        except ValueError as error:
            raise UsageError(str(error)) from None
        try:
            # The view has the chosen output alone: the explainer reads its only output.
            self.explainer = CAMExplainer(
                self.model, run.methods, options, output=None, batch_size=self.batch_size
            )
            self.layer = self.explainer.layer
        except ValueError as error:
            raise UsageError(str(error)) from None
        channels_first = self.explainer.resolved.channels_first
        self.size, self.channels = _input_size(self.model, args.size, channels_first)
        if self.regression:
            self.names, self.targets = _regression_targets(self.model, args)
            self.ranks = 1
        else:
            self.names = _class_names(args.class_names, self.explainer.num_classes)
            self.targets = _targets(args.targets, self.names)
            self.ranks = top_k(self.targets) or 1
        if self.ranks > len(self.names):
            raise UsageError(
                f"--targets {args.targets}: the model scores only {len(self.names)} classes."
            )
        self.preprocess = _preprocess(args, self.channels)
        self.metrics = _metrics(args.metrics)
        if self.regression:
            self.metrics = _regression_metrics(args.metrics)

    @property
    def result_fields(self) -> list[str]:
        """The columns of results.csv that say what was explained."""
        return ["unit", "value"] if self.regression else ["class", "name", "probability"]

    def _result_cells(self, class_id: int, score: float) -> dict[str, Any]:
        if self.regression:
            return {"unit": class_id, "value": score}
        return {"class": class_id, "name": self.names[class_id], "probability": score}

    def _caption(self, class_id: int, score: float, rank: int) -> str:
        if self.regression:
            return f"value={score:.4g}" if class_id == 0 else f"unit {class_id}={score:.4g}"
        text = f"{self.names[class_id]} p={score:.2f}"
        return text if self.ranks == 1 else f"#{rank + 1} {text}"

    @property
    def input_note(self) -> str:
        """What the summary says about the images the model was given, if anything."""
        if self.channels == 3:
            return ""
        return (
            f"; images converted to {CHANNEL_MODES[self.channels]} for the model's "
            f"{self.channels}-channel input"
        )

    def load(
        self, positions: dict[str, int], paths: Sequence[str]
    ) -> list[tuple[str, LoadedImage]]:
        loaded = []
        for path in paths:
            try:
                image = load_image(path, self.size, self.args.fit, self.channels)
            except UnreadableImage as error:
                logger.warning("skipped %s: not a readable image (%s)", _shown(path), error)
                self.skipped(positions[path], path, str(error))
                continue
            except Exception as error:  # MemoryError too: this file fails, not the run
                logger.error("failed to read %s: %s: %s", _shown(path), type(error).__name__, error)
                self.run.failed.append((path, f"{type(error).__name__}: {error}"))
                continue
            if image.conversion and image.conversion not in self.run.conversions:
                self.run.conversions.add(image.conversion)
                logger.info(
                    "converting %s images to 8-bit %s for the model (first: %s; said once)",
                    image.conversion,
                    CHANNEL_MODES[self.channels],
                    _shown(path),
                )
            loaded.append((path, image))
        return loaded

    def explain(self, positions: dict[str, int], loaded: list[tuple[str, LoadedImage]]) -> None:
        count = len(loaded)
        pixels = np.stack([image.pixels for _, image in loaded])
        # Every batch has the same size (the last one repeats its last image), so the
        # compiled CAM function and the metrics' forward trace once for the run.
        padded = pixels[np.minimum(np.arange(self.batch_size), count - 1)]
        results = self.explainer(padded, targets=self.targets, preprocess=self.preprocess)
        per_method = {}
        for method, result in results.items():
            heatmaps = result.heatmaps.reshape(-1, self.ranks, *result.heatmaps.shape[-2:])
            classes = result.classes.reshape(-1, self.ranks)
            scores = result.scores.reshape(-1, self.ranks)
            # Rank-major copies so that each metric runs on one fixed-shape batch.
            flat_classes = np.swapaxes(classes, 0, 1).reshape(-1)
            values = _per_image_metrics(
                self.metrics,
                self.model,
                np.concatenate([padded] * self.ranks),
                np.swapaxes(heatmaps, 0, 1).reshape(-1, *heatmaps.shape[-2:]),
                flat_classes,
                self.preprocess,
                self._again(method, flat_classes),
            )
            values = {k: v.reshape(self.ranks, -1).T for k, v in values.items()}
            per_method[method] = _MethodMaps(heatmaps, classes, scores, values)
        for offset, (path, image) in enumerate(loaded):
            try:  # one image's event, to every sink (the folder sink records it whole)
                write_all(
                    self.run.sinks, self._event(positions[path], path, image, offset, per_method)
                )
            except Exception as error:  # a name or a full disk: this file fails, not the batch
                logger.error(
                    "failed to write %s: %s: %s", _shown(path), type(error).__name__, error
                )
                self.run.failed.append((path, f"{type(error).__name__}: {error}"))

    def _again(self, method: str, classes: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """Display images -> `method`'s heatmaps for `classes` (ARCC's coherency)."""

        def again(images: np.ndarray) -> np.ndarray:
            maps = self.explainer(images, targets=classes, preprocess=self.preprocess)
            return maps[method].heatmaps

        return again

    def skipped(self, index: int, path: str, why: str) -> None:
        """Records a file that is not an image (an event of its own: --resume skips it)."""
        write_all(self.run.sinks, Event(step=index, texts={"skipped": why}, name=path))
        self.run.skipped.append((path, why))

    def _event(
        self,
        index: int,
        path: str,
        image: LoadedImage,
        offset: int,
        per_method: dict[str, _MethodMaps],
    ) -> Event:
        """One image's thumbnail, its overlays (tag: method, then `_topK`) and its rows."""
        from keras_cam.render.overlay import captioned_grid, overlay

        shown = _display(image.pixels)
        images = {"image": shown[None]}
        rows = []
        for rank in range(self.ranks):
            for method, maps in per_method.items():
                class_id = int(maps.classes[offset, rank])
                score = float(maps.scores[offset, rank])
                heatmap = maps.heatmaps[offset, rank]
                blended = overlay(shown[None], heatmap[None], self.args.alpha, self.args.colormap)
                peak = _peak(heatmap)
                caption = self._caption(class_id, score, rank) + (
                    " (flat map)" if peak is None else ""
                )
                tag = f"{method}{'' if self.ranks == 1 else f'_top{rank + 1}'}"
                images[tag] = captioned_grid([[blended[0]]], [caption])[None]
                # A flat map has no peak: the cells stay empty rather than claim (0, 0).
                peak_x, peak_y = image.placement.to_original(*peak) if peak else (None, None)
                rows.append(
                    {
                        "file": _shown(path),
                        "method": method,
                        "rank": rank + 1,
                        **self._result_cells(class_id, score),
                        "layer": self.layer,
                        "peak_x": peak_x,
                        "peak_y": peak_y,
                        **{k: float(v[offset, rank]) for k, v in maps.metrics.items()},
                        "overlay": tag,
                    }
                )
        return Event(step=index, images=images, rows=rows, name=path)

    def folder_sink(self, args: argparse.Namespace) -> FolderSink:
        """The folder sink of --out, now that the columns of results.csv are known."""
        fields = ["file", "method", "rank", *self.result_fields, "layer"]
        fields += ["peak_x", "peak_y", *self.metrics, "overlay"]
        formats = {name: ".6f" for name in ("probability", *self.metrics)}
        return FolderSink(
            args.out,
            mode="resume" if args.resume else "overwrite" if args.overwrite else "new",
            pattern=_PATTERNS,
            columns=fields,
            formats=formats,
            file_columns=("overlay",),
            index=None,  # the contact sheet, written at the end with the run's summary
            also_writes=("skipped.txt", "status.json"),
        )

    def sheet_rows(self, records: Sequence[FolderRecord]) -> list[SheetRow]:
        """The contact sheet's rows: one per image and rank, one overlay per method."""
        sheet = []
        for record in records:
            by_rank: dict[int, list[dict]] = {}
            for row in record.rows:
                by_rank.setdefault(row["rank"], []).append(row)
            for rank, rows in by_rank.items():
                # Every method explains the same class (same targets, same forward pass).
                first = rows[0]
                class_id = first["unit"] if self.regression else first["class"]
                sheet.append(
                    SheetRow(
                        file=first["file"],
                        image=record.files["image"][0],
                        overlays={row["method"]: row["overlay"] for row in rows},
                        class_id=class_id,
                        name=self.names[class_id],
                        probability=first["value" if self.regression else "probability"],
                        rank=rank,
                    )
                )
        return sheet


def _colour_stops(colormap: str) -> list[str]:
    from keras_cam.render.overlay import colorize

    colours = colorize(np.linspace(0.0, 1.0, 11)[None, None, :], colormap)[0, 0]
    return ["#{:02x}{:02x}{:02x}".format(*map(int, colour)) for colour in colours]


def _not_explained(run: _Run) -> list[tuple[str, str]]:
    """Every input or folder not explained, with why: skipped.txt, the sheet, the summary."""
    listed = [(folder, f"skipped: folder not readable ({why})") for folder, why in run.unreadable]
    listed += [(path, f"skipped: {why}") for path, why in run.skipped]
    listed += [(path, f"failed: {why}") for path, why in run.failed]
    listed += [
        (path, "not processed: the run was interrupted (continue with --resume)")
        for path in run.not_processed
    ]
    return [(_shown(path), why) for path, why in listed]


def _write_report(
    run: _Run, rows: list[SheetRow], title: str, summary: str, notice: str, colormap: str
) -> None:
    listed = _not_explained(run)
    page = contact_sheet_html(
        rows,
        run.methods,
        title,
        summary,
        skipped=listed,
        colors=_colour_stops(colormap),
        notice=notice,
        regression=run.regression,
    )
    run.folder.write_text("index.html", page)
    if listed:
        run.folder.write_text("skipped.txt", "".join(f"{path}\t{why}\n" for path, why in listed))
    else:
        run.folder.remove("skipped.txt")  # from the interrupted run this one completes


def _write_status(run: _Run, state: str, options: dict, total: int) -> None:
    status = {
        "state": state,
        "keras_cam": __version__,
        "images": total,
        "explained": run.explained,
        "skipped": len(run.skipped),
        "failed": len(run.failed),
        "not_processed": len(run.not_processed),
        "unreadable_folders": len(run.unreadable),
        "flat_maps": run.flat,
        "options": options,
    }
    run.folder.write_text("status.json", json.dumps(status, indent=1) + "\n")


def _options(args: argparse.Namespace) -> dict:
    """The options that --resume must repeat, as JSON values."""
    chosen = {k: v for k, v in vars(args).items() if k not in _RESUME_FREE}
    chosen["images"] = list(chosen["images"])
    return json.loads(json.dumps(chosen))


def _check_resume(folder: OwnedFolder, options: dict) -> None:
    try:
        with open(folder.path("status.json"), encoding="utf-8") as file:
            status = json.load(file)
        before = status["options"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(f"--resume: cannot read {folder.path('status.json')}: {error}.") from None
    changed = [
        f"--{key.replace('_', '-')} {before.get(key)!r} then, {options.get(key)!r} now"
        for key in sorted(set(before) | set(options))
        if before.get(key) != options.get(key)
    ]
    if changed:
        raise UsageError(
            f"--resume continues a run with the same options; these differ: "
            f"{'; '.join(changed)}. Repeat the first run's options, or start anew with "
            f"--overwrite."
        )


def _explain(args: argparse.Namespace) -> int:
    methods = _methods(args.method)
    _metrics(args.metrics)
    folder = OwnedFolder(args.out)
    # This command's own earlier outputs are never taken as inputs.
    exclude = [folder.path(name) for name in _FOLDERS if folder.is_ours(name)]
    found = find_images(args.images, exclude=exclude)
    if found.missing:
        raise UsageError(f"No such file or folder, and no glob match: {', '.join(found.missing)}.")
    files = found.files[: args.limit] if args.limit else found.files
    _check_inputs(folder, args.images, found.files)
    _check_out(folder, args.overwrite, args.resume)
    if not files:
        logger.error(
            "no image files found in %s (%d files without an image extension ignored%s).",
            " ".join(args.images),
            found.ignored,
            "".join(f"; folder not readable: {_shown(f)}" for f, _ in found.unreadable),
        )
        return EXIT_FAILED
    options = _options(args)
    if args.resume:
        _check_resume(folder, options)
    with _without_native_log_lines(args.quiet_backend):
        import keras

    tracked = trackers.open_trackers(args)  # before the work: a missing package, a server down
    run = _Run(methods=methods)
    run.unreadable = list(found.unreadable)
    for path, why in found.unreadable:
        logger.warning("skipped folder %s: not readable (%s)", _shown(path), why)
    with _without_native_log_lines(args.quiet_backend):  # loading touches the device
        explainer = _Explainer(args, run, len(files))
    run.regression = explainer.regression
    # Everything is written through these sinks, the folder sink (--out) first.
    run.folder = explainer.folder_sink(args)
    run.sinks = [run.folder]
    try:
        for sink in run.sinks:  # the folder sink holds --out from here (its lock)
            sink.open()
    except FolderInUseError:
        raise UsageError(
            f"Another keras-cam run is writing into --out {args.out}; wait for it to "
            f"finish or choose another --out."
        ) from None
    except ValueError as error:  # another run wrote there meanwhile
        raise UsageError(f"--out: {error}") from None
    # What an interrupted run recorded (explained or skipped) is not done again.
    done = {_real(record.name) for record in run.folder.records}
    run.skipped = [(r.name, r.texts["skipped"]) for r in run.folder.records if r.texts]
    todo = [path for path in files if _real(path) not in done]
    positions = {path: index for index, path in enumerate(files)}  # output names follow it
    if args.resume:
        logger.info("resuming: %d of %d images left to do", len(todo), len(files))
    _write_status(run, "running", options, len(files))
    start = time.perf_counter()
    interrupted = False
    progress = keras.utils.Progbar(len(todo), unit_name="image", verbose=0 if args.quiet else 1)
    first = 0
    try:
        for first in range(0, len(todo), explainer.batch_size):
            paths = todo[first : first + explainer.batch_size]
            loaded = explainer.load(positions, paths)
            if loaded:
                try:
                    explainer.explain(positions, loaded)
                except Exception as error:  # MemoryError too: the batch fails, not the run
                    logger.exception("failed to explain %d images", len(loaded))
                    reason = f"{type(error).__name__}: {error}"
                    run.failed.extend((path, reason) for path, _ in loaded)
            progress.add(len(paths))
        first = len(todo)
    except KeyboardInterrupt:
        interrupted = True
    with deferred_interrupt():
        seconds = time.perf_counter() - start
        if interrupted:
            done = {_real(record.name) for record in run.folder.records}
            done |= {_real(path) for path, _ in run.failed}
            run.not_processed = [path for path in todo[first:] if _real(path) not in done]
        summary = (
            f"{run.explained} images explained with {', '.join(methods)} in {seconds:.1f} s; "
            f"{len(run.skipped)} skipped (not readable), {len(run.failed)} failed, "
            f"{found.ignored} files without an image extension ignored{explainer.input_note}"
        )
        if run.unreadable:
            summary += f", {len(run.unreadable)} folders not readable"
        if run.flat:
            summary += f"; {run.flat} flat maps (no peak)"
        notice = ""
        if interrupted:
            notice = (
                f"Interrupted: {len(run.not_processed)} of {len(files)} images not processed "
                f"(listed below and in skipped.txt); continue with the same command and --resume."
            )
        rows = explainer.sheet_rows(run.folder.records)
        _write_report(run, rows, os.path.basename(args.model), summary, notice, args.colormap)
        _write_status(run, "interrupted" if interrupted else "complete", options, len(files))
        for sink in run.sinks:
            sink.close()
    print(f"keras-cam: {'interrupted; ' if interrupted else ''}{summary}.")
    for path, why in _not_explained(run):
        print(f"  not explained: {path} ({why})")
    print(f"keras-cam: wrote {os.path.join(args.out, 'index.html')} and results.csv")
    logged = trackers.log_run(tracked, args.out)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if run.explained and not run.failed and logged else EXIT_FAILED


# TensorFlow's C++ log lines (absl format: "I0000 00:00:17... 123 port.cc:153] ...").
_NATIVE_LOG_LINE = re.compile(r"^[IWEF]\d{4} \d+:\d+:\d+\.\d+ +\d+ [^\]]+\] ")
_NATIVE_LOG_NOTE = "WARNING: All log messages before absl::InitializeLog() is called"


@contextlib.contextmanager
def _without_native_log_lines(quiet: bool) -> Iterator[None]:
    """Drops TensorFlow's C++ log lines written to stderr in the block, when `quiet`.

    TensorFlow writes them (oneDNN, CUDA drivers, `cuInit`) to the process's
    stderr while it starts and first touches a device, some before its logging
    is set up, so `TF_CPP_MIN_LOG_LEVEL` alone does not hide them. stderr is
    pointed at a temporary file in the block; everything else written there
    (Python warnings, a traceback) is passed on afterwards.
    """
    if not quiet:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            lines = caught.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = [
                line
                for line in lines
                if not _NATIVE_LOG_LINE.match(line) and not line.startswith(_NATIVE_LOG_NOTE)
            ]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `keras-cam` with `argv` (default: the process's arguments); returns the exit status.

    Example:

    >>> from keras_cam.cli.command import main
    >>> main(["explain", "model.keras", "photos/", "--out", "cams"])  # doctest: +SKIP
    0
    """
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("keras-cam: %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    # TensorFlow's C++ log lines are silenced unless the user chose a level.
    args.quiet_backend = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        if args.command == "methods":
            write_methods(sys.stdout)
            return EXIT_OK
        return _explain(args)
    except (UsageError, trackers.TrackerError) as error:
        logger.error("%s", error)
        return EXIT_USAGE
    except ModelError as error:
        logger.error("%s", error)
        return EXIT_MODEL
    except KeyboardInterrupt:
        logger.error("interrupted before any image was explained")
        return EXIT_INTERRUPTED
    finally:
        logger.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
