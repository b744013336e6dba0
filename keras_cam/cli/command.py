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
input, a non-empty `--out` without `--overwrite`, a layer the model lacks,
class names that do not match the model); 3 when the model file is missing or
Keras cannot load it; 130 when interrupted (what was done so far is written).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keras_cam import __version__
from keras_cam.cli.image_files import (
    FITS,
    IMAGE_EXTENSIONS,
    LoadedImage,
    UnreadableImage,
    find_images,
    load_image,
)
from keras_cam.diagnostics import registry
from keras_cam.render.contact_sheet import SheetRow, contact_sheet_html

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

DEFAULT_METRICS = ("focus", "average_drop", "increase_in_confidence")
# The metrics of one folder of images: those that need no masks, labels or earlier event.
_OFFLINE = ("masks", "labels", "previous")

# The files this command writes into --out; --overwrite removes these and nothing else.
OUTPUTS = ("overlays", "images", "results.csv", "index.html", "skipped.txt")


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


def _output(text: str) -> str | int:
    """`--output`: a position when it is a number, else a dict key or an output layer name."""
    return int(text) if text.isdigit() else text


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
        "--output",
        type=_output,
        default=None,
        metavar="KEY|NAME|N",
        help="which output of a multi-output model is explained: a dict key, an output "
        "layer name or a position (default: the only output)",
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
        choices=PREPROCESSING,
        metavar="NAME",
        help="maps RGB pixels 0-255 to model input: 'none' (as they are), 'scale' (÷255) "
        f"or a keras.applications family ({', '.join(PREPROCESSING[2:])})",
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
        default=",".join(DEFAULT_METRICS),
        metavar="NAME[,NAME...]",
        help=f"per-map metrics in results.csv, from "
        f"{', '.join(registry.metric_names(without=_OFFLINE))}, or 'none'. "
        "average_drop and increase_in_confidence cost 2 forward passes of the batch "
        "each, deletion and insertion 18",
    )
    explain.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


@dataclass
class _Run:
    """What `explain` has done so far: rows for the sheet, skipped and failed files."""

    out: str
    methods: list[str]
    rows: list[SheetRow] = field(default_factory=list)
    explained: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    conversions: set[str] = field(default_factory=set)


def _methods(values: Sequence[str] | None) -> list[str]:
    names = [name for value in values or ["gradcam"] for name in _comma_list(value)]
    if not names:
        raise UsageError("--method is empty; name at least one method (see `keras-cam methods`).")
    return names


def _metrics(text: str) -> list[str]:
    names = [] if text.strip().lower() == "none" else _comma_list(text)
    available = registry.metric_names(without=_OFFLINE)
    unknown = [name for name in names if name not in available]
    if unknown:
        raise UsageError(
            f"Unknown metric(s) {', '.join(unknown)}; choose from {', '.join(available)} or 'none'."
        )
    return names


def _check_out(out: str, overwrite: bool) -> None:
    if os.path.isfile(out):
        raise UsageError(f"--out {out} is a file; name a folder.")
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise UsageError(
            f"--out {out} is not empty; choose another folder or pass --overwrite "
            f"(which replaces this command's outputs there: {', '.join(OUTPUTS)})."
        )


def _prepare_out(out: str) -> None:
    """Removes this command's earlier outputs (nothing else) and makes the folders."""
    if os.path.isdir(out):
        for name in OUTPUTS:
            path = os.path.join(out, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    os.makedirs(os.path.join(out, "overlays"), exist_ok=True)
    os.makedirs(os.path.join(out, "images"), exist_ok=True)


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


def _output_layer(model: Any) -> Any:
    layer = model.layers[-1]
    while hasattr(layer, "layers") and layer.layers:
        layer = layer.layers[-1]
    return layer


def _with_probabilities(model: Any) -> Any:
    """The model with a softmax (sigmoid for one unit) appended when its head has none.

    The explainer differentiates the logits either way (the appended activation
    is switched off while it traces), so the maps are unchanged; the reported
    scores become probabilities.
    """
    import keras

    from keras_cam.core.scores import output_activation

    outputs = model.outputs[0]
    if len(model.outputs) != 1 or len(outputs.shape) != 2:
        return model
    if output_activation(_output_layer(model)) is not None:
        return model
    logger.info(
        "the model's output has no softmax: probabilities are the %s of its outputs",
        "sigmoid" if outputs.shape[-1] == 1 else "softmax",
    )
    if outputs.shape[-1] == 1:
        activation = keras.layers.Activation("sigmoid", name="keras_cam_probability")
    else:
        activation = keras.layers.Softmax(name="keras_cam_probability")
    return keras.Model(model.inputs, activation(outputs), name=model.name)


def _input_size(model: Any, requested: tuple[int, int] | None, channels_first: bool) -> tuple:
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4:
        raise UsageError(f"The model takes input of shape {shape}, not images (N, H, W, C).")
    size = shape[2:4] if channels_first else shape[1:3]
    if requested is not None:
        if any(s is not None and s != r for s, r in zip(size, requested, strict=True)):
            raise UsageError(
                f"--size {requested[0]}x{requested[1]} does not match the model's input "
                f"size {size[0]}x{size[1]}; leave --size out."
            )
        return requested
    if None in size:
        raise UsageError("The model accepts any input size: give one with --size, e.g. 224.")
    return (int(size[0]), int(size[1]))


def explain_options(args: argparse.Namespace) -> Any:
    """The `ExplainOptions` of the command line: one flag per field, named after it."""
    from keras_cam.core.options import OPTION_NAMES, ExplainOptions

    return ExplainOptions(**{name: getattr(args, name) for name in OPTION_NAMES})


def _output_view(model: Any, output: str | int | None) -> Any:
    """The model with only the `--output` output, so metrics and probabilities read it."""
    if output is None and len(model.outputs) == 1:
        return model
    import keras

    from keras_cam.core import outputs

    try:
        key = outputs.resolve(model, output)
    except ValueError as error:
        raise UsageError(f"--output: {error}") from None
    return keras.Model(model.inputs, outputs.symbolic(model, key), name=model.name)


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


def _preprocess(name: str) -> Callable[[np.ndarray], Any] | None:
    if name == "none":
        return None
    if name == "scale":
        return lambda images: images / 255.0
    import keras

    return getattr(keras.applications, name).preprocess_input


def _stem(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
    return safe[:60] or "image"


def _peak(heatmap: np.ndarray) -> tuple[int, int]:
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(col), int(row)


def _per_image_metrics(
    names: Sequence[str],
    model: Any,
    images: np.ndarray,
    heatmaps: np.ndarray,
    classes: np.ndarray,
    preprocess: Callable[[np.ndarray], Any] | None,
) -> dict[str, np.ndarray]:
    inputs = registry.MetricInputs(
        maps=heatmaps,
        classes=classes,
        model=model,
        images=images,
        preprocess=preprocess,
        batch_size=len(images),
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
        self.args, self.run, self.writer = args, run, None
        # A run of fewer files than --batch-size is not padded up to it.
        self.batch_size = min(args.batch_size, count)
        try:
            options = explain_options(args)
        except ValueError as error:
            raise UsageError(str(error)) from None
        model = _output_view(_load_model(args.model), options.output)
        self.model = _with_probabilities(model)
        try:
            # The view has the chosen output alone: the explainer reads its only output.
            self.explainer = CAMExplainer(
                self.model, run.methods, options, output=None, batch_size=self.batch_size
            )
            self.layer = self.explainer.layer
        except ValueError as error:
            raise UsageError(str(error)) from None
        channels_first = self.explainer.resolved.channels_first
        self.size = _input_size(self.model, args.size, channels_first)
        self.names = _class_names(args.class_names, self.explainer.num_classes)
        self.targets = _targets(args.targets, self.names)
        self.ranks = top_k(self.targets) or 1
        if self.ranks > len(self.names):
            raise UsageError(
                f"--targets {args.targets}: the model scores only {len(self.names)} classes."
            )
        self.preprocess = _preprocess(args.preprocess)
        self.metrics = _metrics(args.metrics)

    def load(self, paths: Sequence[str]) -> list[tuple[str, LoadedImage]]:
        loaded = []
        for path in paths:
            try:
                image = load_image(path, self.size, self.args.fit)
            except UnreadableImage as error:
                logger.warning("skipped %s: not a readable image (%s)", path, error)
                self.run.skipped.append((path, str(error)))
                continue
            if image.conversion and image.conversion not in self.run.conversions:
                self.run.conversions.add(image.conversion)
                logger.info(
                    "converting %s images to 8-bit RGB (first: %s; said once)",
                    image.conversion,
                    path,
                )
            loaded.append((path, image))
        return loaded

    def explain(self, first_index: int, loaded: list[tuple[str, LoadedImage]]) -> None:
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
            values = _per_image_metrics(
                self.metrics,
                self.model,
                np.concatenate([padded] * self.ranks),
                np.swapaxes(heatmaps, 0, 1).reshape(-1, *heatmaps.shape[-2:]),
                np.swapaxes(classes, 0, 1).reshape(-1),
                self.preprocess,
            )
            values = {k: v.reshape(self.ranks, -1).T for k, v in values.items()}
            per_method[method] = _MethodMaps(heatmaps, classes, scores, values)
        for offset, (path, image) in enumerate(loaded):
            self._write_image(first_index + offset, path, image, offset, per_method)
        self.run.explained += count

    def _write_image(
        self,
        index: int,
        path: str,
        image: LoadedImage,
        offset: int,
        per_method: dict[str, _MethodMaps],
    ) -> None:
        from PIL import Image

        from keras_cam.render.overlay import captioned_grid, overlay

        stem = f"{index:05d}_{_stem(path)}"
        thumbnail = os.path.join("images", f"{stem}.jpg")
        Image.fromarray(image.pixels).save(os.path.join(self.run.out, thumbnail), quality=90)
        for rank in range(self.ranks):
            overlays = {}
            for method, maps in per_method.items():
                class_id = int(maps.classes[offset, rank])
                score = float(maps.scores[offset, rank])
                name = self.names[class_id]
                heatmap = maps.heatmaps[offset, rank]
                blended = overlay(
                    image.pixels[None], heatmap[None], self.args.alpha, self.args.colormap
                )[0]
                caption = (
                    f"{name} p={score:.2f}"
                    if self.ranks == 1
                    else (f"#{rank + 1} {name} p={score:.2f}")
                )
                picture = captioned_grid([[blended]], [caption])
                suffix = "" if self.ranks == 1 else f"_top{rank + 1}"
                relative = os.path.join("overlays", f"{stem}_{method}{suffix}.png")
                Image.fromarray(picture).save(
                    os.path.join(self.run.out, relative), compress_level=1
                )
                overlays[method] = relative
                peak_x, peak_y = image.placement.to_original(*_peak(heatmap))
                self.writer.writerow(
                    {
                        "file": path,
                        "method": method,
                        "rank": rank + 1,
                        "class": class_id,
                        "name": name,
                        "probability": f"{score:.6f}",
                        "layer": self.layer,
                        "peak_x": peak_x,
                        "peak_y": peak_y,
                        **{k: f"{v[offset, rank]:.6f}" for k, v in maps.metrics.items()},
                        "overlay": relative.replace(os.sep, "/"),
                    }
                )
            # Every method explains the same class (same targets, same forward pass).
            self.run.rows.append(
                SheetRow(
                    file=path,
                    image=thumbnail,
                    overlays=overlays,
                    class_id=class_id,
                    name=name,
                    probability=score,
                    rank=rank + 1,
                )
            )


def _write_sheet(run: _Run, title: str, summary: str) -> None:
    page = contact_sheet_html(run.rows, run.methods, title, summary)
    with open(os.path.join(run.out, "index.html"), "w", encoding="utf-8") as file:
        file.write(page)


def _write_skipped(run: _Run) -> None:
    listed = [(path, f"skipped: {why}") for path, why in run.skipped]
    listed += [(path, f"failed: {why}") for path, why in run.failed]
    if listed:
        with open(os.path.join(run.out, "skipped.txt"), "w", encoding="utf-8") as file:
            file.writelines(f"{path}\t{why}\n" for path, why in listed)


def _explain(args: argparse.Namespace) -> int:
    methods = _methods(args.method)
    _metrics(args.metrics)
    found = find_images(args.images)
    if found.missing:
        raise UsageError(f"No such file or folder, and no glob match: {', '.join(found.missing)}.")
    files = found.files[: args.limit] if args.limit else found.files
    if not files:
        logger.error(
            "no image files found in %s (%d files without an image extension ignored).",
            " ".join(args.images),
            found.ignored,
        )
        return EXIT_FAILED
    _check_out(args.out, args.overwrite)
    import keras

    run = _Run(out=args.out, methods=methods)
    explainer = _Explainer(args, run, len(files))
    _prepare_out(args.out)
    fields = ["file", "method", "rank", "class", "name", "probability", "layer"]
    fields += ["peak_x", "peak_y", *explainer.metrics, "overlay"]
    start = time.perf_counter()
    interrupted = False
    with open(os.path.join(args.out, "results.csv"), "w", newline="", encoding="utf-8") as file:
        explainer.writer = csv.DictWriter(file, fieldnames=fields)
        explainer.writer.writeheader()
        progress = keras.utils.Progbar(
            len(files), unit_name="image", verbose=0 if args.quiet else 1
        )
        try:
            for first in range(0, len(files), explainer.batch_size):
                paths = files[first : first + explainer.batch_size]
                loaded = explainer.load(paths)
                if loaded:
                    try:
                        explainer.explain(first, loaded)
                    except Exception as error:
                        logger.exception("failed to explain %d images", len(loaded))
                        reason = f"{type(error).__name__}: {error}"
                        run.failed.extend((path, reason) for path, _ in loaded)
                    file.flush()
                progress.add(len(paths))
        except KeyboardInterrupt:
            interrupted = True
    seconds = time.perf_counter() - start
    summary = (
        f"{run.explained} images explained with {', '.join(methods)} in {seconds:.1f} s; "
        f"{len(run.skipped)} skipped (not readable), {len(run.failed)} failed, "
        f"{found.ignored} files without an image extension ignored"
    )
    _write_sheet(run, os.path.basename(args.model), summary)
    _write_skipped(run)
    print(f"keras-cam: {'interrupted; ' if interrupted else ''}{summary}.")
    for path, why in run.skipped + run.failed:
        print(f"  not explained: {path} ({why})")
    print(f"keras-cam: wrote {os.path.join(args.out, 'index.html')} and results.csv")
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if run.explained and not run.failed else EXIT_FAILED


def _list_methods() -> int:
    from keras_cam.methods import available_methods

    methods = available_methods()
    width = max(map(len, methods))
    for name, description in methods.items():
        print(f"{name:<{width}}  {description}")
    return EXIT_OK


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
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        if args.command == "methods":
            return _list_methods()
        return _explain(args)
    except UsageError as error:
        logger.error("%s", error)
        return EXIT_USAGE
    except ModelError as error:
        logger.error("%s", error)
        return EXIT_MODEL
    finally:
        logger.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
