"""Image files for the command line: found on disk, decoded, converted to RGB, fitted to a size.

Only Pillow and numpy: nothing here imports Keras, so the command can find its
inputs and refuse bad ones before it pays for loading a backend.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
    ".pbm",
    ".pnm",
    ".tga",
)
"""Files with these extensions (any case) are taken from folders and globs."""

FITS = ("crop", "pad", "stretch")


@dataclass(frozen=True)
class FoundImages:
    """The outcome of `find_images`.

    Attributes:
        files: image paths in a stable order (each argument's files sorted, in
            the order the arguments were given; a file reached twice, by two
            arguments or through a symbolic link, is kept once).
        ignored: files in folders or glob matches without an image extension.
        missing: arguments that name no file or folder and match no glob.
        unreadable: `(folder, reason)` for each folder the walk could not list
            (no permission, vanished), so that its images are accounted for.
    """

    files: list[str]
    ignored: int
    missing: list[str]
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def _is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _real(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


class _Walk:
    """Folder walks that follow links but enter each real folder once (no link loops)."""

    def __init__(self, exclude: Iterable[str]) -> None:
        self.exclude: set[str] = {_real(path) for path in exclude}
        self.unreadable: dict[str, str] = {}

    def _on_error(self, error: OSError) -> None:
        folder = error.filename if isinstance(error.filename, str) else str(error.filename)
        self.unreadable.setdefault(folder, f"{type(error).__name__}: {error.strerror}")

    def entries(self, folder: str, depth: int | None = None) -> Iterable[tuple[str, bool]]:
        """(path, is_folder) under `folder`, sorted, down to `depth` levels (None: all)."""
        seen = {*self.exclude, _real(folder)}
        top_depth = folder.rstrip(os.sep).count(os.sep)
        for root, dirs, names in os.walk(folder, onerror=self._on_error, followlinks=True):
            level = root.rstrip(os.sep).count(os.sep) - top_depth + 1
            descend = depth is None or level < depth
            kept = []
            # Real folders first, so that a folder reached also through a link keeps its
            # own path.
            for name in sorted(dirs, key=lambda n: os.path.islink(os.path.join(root, n))):
                real = _real(os.path.join(root, name))
                if real not in seen:
                    kept.append(name)
                    if descend:
                        seen.add(real)
            kept.sort()
            dirs[:] = kept if descend else []
            for name in kept:
                yield os.path.join(root, name), True
            for name in sorted(names):
                yield os.path.join(root, name), False

    def files(self, folder: str) -> Iterable[str]:
        return (path for path, is_folder in self.entries(folder) if not is_folder)


def _parts(path: str) -> list[str]:
    return [part for part in re.split(r"[\\/]" if os.sep == "\\" else "/", path) if part]


def _match_name(pattern: str, name: str) -> bool:
    # As glob: a wildcard does not match a leading dot (hidden files and folders).
    if name.startswith(".") and not pattern.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, pattern)


def _match(pattern: Sequence[str], parts: Sequence[str]) -> bool:
    """Whether path `parts` match glob `pattern` components (`**`: any number of folders)."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return _match(pattern[1:], parts) or (
            bool(parts) and not parts[0].startswith(".") and _match(pattern, parts[1:])
        )
    return bool(parts) and _match_name(pattern[0], parts[0]) and _match(pattern[1:], parts[1:])


def _within(path: str, folders: set[str]) -> bool:
    parent = os.path.dirname(path)
    while parent and parent not in folders:
        up = os.path.dirname(parent)
        parent = "" if up == parent else up
    return bool(parent)


def _glob(spec: str, walk: _Walk) -> list[str] | None:
    """Files matched by glob `spec` (a matched folder gives all its files); None if no match.

    `glob.glob(recursive=True)` follows a link to `.` forever (2**depth paths); this walks
    the fixed leading folder once, through `_Walk`, and matches the rest of the pattern.
    """
    parts = _parts(spec)
    fixed = 0
    while fixed < len(parts) - 1 and not glob.has_magic(parts[fixed]):
        fixed += 1
    pattern = parts[fixed:]
    absolute = spec.startswith(("/", "\\")) or bool(os.path.splitdrive(spec)[0])
    root = os.path.join(*parts[:fixed]) if fixed else ""
    if absolute:
        drive = os.path.splitdrive(spec)[0]
        root = drive + os.sep + root
    start = root or os.curdir
    if not os.path.isdir(start):
        return None
    depth = None if "**" in pattern else len(pattern)
    matched: list[str] = []
    folders: set[str] = set()  # matched folders: all their files count
    deeper: list[str] = []  # matched folders below the depth the pattern can reach
    any_match = False
    for path, is_folder in walk.entries(start, depth):
        shown = path if root else os.path.relpath(path, start)
        if _match(pattern, _parts(os.path.relpath(path, start))):
            any_match = True
            if not is_folder:
                matched.append(shown)
            elif depth is None:
                folders.add(shown)
            else:
                deeper.append(shown)
        elif not is_folder and _within(shown, folders):
            matched.append(shown)
    for folder in deeper:
        matched.extend(walk.files(folder))
    return matched if any_match else None


def find_images(specs: Iterable[str], exclude: Iterable[str] = ()) -> FoundImages:
    """Expands files, folders (recursively) and glob patterns into image files.

    A file named explicitly is always tried, whatever its extension; folders
    and glob matches contribute only files with an extension from
    `IMAGE_EXTENSIONS`, the others are counted as ignored. Folders reached
    through symbolic links are followed, each real folder once, and a file
    reached twice is kept once; folders in `exclude` are not entered.
    """
    walk = _Walk(exclude)
    files: dict[str, str] = {}  # real path -> the path as found
    ignored, missing = 0, []
    for spec in specs:
        if os.path.isfile(spec):
            files.setdefault(_real(spec), spec)
            continue
        if os.path.isdir(spec):
            candidates = list(walk.files(spec))
        else:
            matches = _glob(spec, walk)
            if matches is None:
                missing.append(spec)
                continue
            candidates = matches
        for path in candidates:
            if _is_image_name(path):
                files.setdefault(_real(path), path)
            else:
                ignored += 1
    return FoundImages(
        files=list(files.values()),
        ignored=ignored,
        missing=missing,
        unreadable=sorted(walk.unreadable.items()),
    )


class UnreadableImage(Exception):
    """An image file that Pillow cannot decode."""


@dataclass(frozen=True)
class Placement:
    """Where the original image lies in the fitted one: `fitted = original · scale + offset`."""

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float
    width: int
    height: int

    def to_original(self, x: float, y: float) -> tuple[int, int]:
        """Pixel (x, y) of the fitted image -> the nearest pixel of the original image."""
        ox = (x + 0.5 - self.offset_x) / self.scale_x - 0.5
        oy = (y + 0.5 - self.offset_y) / self.scale_y - 0.5
        return (
            int(np.clip(round(ox), 0, self.width - 1)),
            int(np.clip(round(oy), 0, self.height - 1)),
        )


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image fitted to the model's input size.

    Attributes:
        pixels: uint8 (height, width, channels) at the model's input size:
            grayscale, RGB or RGBA as the model takes.
        placement: how original pixels map to `pixels`.
        conversion: what was converted to reach 8-bit RGB (e.g. `"grayscale"`,
            `"alpha channel"`, `"16-bit"`), or None for an 8-bit RGB file.
    """

    pixels: np.ndarray
    placement: Placement
    conversion: str | None


def _to_rgb(image: Image.Image) -> tuple[Image.Image, str | None]:
    """8-bit RGB, and a word for what had to be converted."""
    mode = image.mode
    if mode == "RGB":
        return image, None
    if mode.startswith("I;16") or mode in ("I", "F"):
        # Called on the already reduced image: small arrays, and never a float64 copy.
        # 16-bit files use the whole 0–65535 range; 32-bit ones are read the same way,
        # and float ones as 0–1 when they fit there, else as 0–255.
        if mode == "F":
            values = np.nan_to_num(np.asarray(image, dtype=np.float32))
            values = values * 255.0 if values.max(initial=0.0) <= 1.0 else values
            word = "32-bit float"
        else:
            values = np.asarray(image).astype(np.int64, copy=False) // 257
            word = "16-bit"
        gray = np.clip(values, 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB"), word
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels shown on white, as an image viewer or a browser shows them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB"), "alpha channel"
    words = {"L": "grayscale", "1": "1-bit", "P": "palette", "CMYK": "CMYK", "YCbCr": "YCbCr"}
    return image.convert("RGB"), words.get(mode, mode)


def _to_channels(image: Image.Image, channels: int) -> tuple[Image.Image, str | None]:
    """8-bit grayscale (1 channel), RGB (3) or RGBA (4), and a word for what was converted."""
    if channels == 4:
        if image.mode == "RGBA":
            return image, None
        if image.mode in ("LA", "PA", "RGBa", "La") or "transparency" in image.info:
            return image.convert("RGBA"), f"{image.mode} to RGBA"
        rgb, word = _to_rgb(image)
        return rgb.convert("RGBA"), f"{word or 'RGB'}, opaque alpha added"
    if channels == 1 and image.mode == "L":
        return image, None
    rgb, word = _to_rgb(image)
    if channels == 1:
        return rgb.convert("L"), "colour" if word is None else word
    return rgb, word


def _fit(image: Image.Image, size: tuple[int, int], fit: str) -> tuple[Image.Image, Placement]:
    """Resizes to `size` (height, width): centre crop, letterbox pad or stretch."""
    height, width = size
    w, h = image.size
    resample = Image.Resampling.BILINEAR
    if fit == "stretch":
        placement = Placement(width / w, height / h, 0.0, 0.0, w, h)
        return image.resize((width, height), resample), placement
    if fit == "crop":
        scale = max(width / w, height / h)
        left, top = (w - width / scale) / 2, (h - height / scale) / 2
        box = (left, top, left + width / scale, top + height / scale)
        placement = Placement(scale, scale, -left * scale, -top * scale, w, h)
        return image.resize((width, height), resample, box=box), placement
    if fit == "pad":
        scale = min(width / w, height / h)
        inner = (max(1, round(w * scale)), max(1, round(h * scale)))
        offset = ((width - inner[0]) // 2, (height - inner[1]) // 2)
        canvas = Image.new(image.mode, (width, height))
        canvas.paste(image.resize(inner, resample), offset)
        placement = Placement(inner[0] / w, inner[1] / h, *map(float, offset), w, h)
        return canvas, placement
    raise ValueError(f"fit must be one of {FITS}, got {fit!r}.")


def load_image(
    path: str, size: tuple[int, int], fit: str = "crop", channels: int = 3
) -> LoadedImage:
    """Decodes `path` (first frame; EXIF orientation applied) fitted to `size`.

    Args:
        path: an image file Pillow can decode.
        size: (height, width) of the result.
        fit: `"crop"` scales the image to cover `size` and cuts the centre,
            `"pad"` scales it to fit inside and pads with black (letterbox),
            `"stretch"` resizes to `size` ignoring the aspect ratio. Defaults
            to `"crop"`.
        channels: 1 (grayscale), 3 (RGB) or 4 (RGBA): the model's channel
            count. Defaults to `3`.

    Raises:
        UnreadableImage: the file is not an image Pillow can decode
            (truncated, corrupt, or another kind of file).
    """
    try:
        with Image.open(path) as opened:
            image, factors = _reduced(opened, size)
            transposed = ImageOps.exif_transpose(image)
            if transposed.size != image.size:  # turned a quarter: the factors swap too
                factors = factors[::-1]
            rgb, conversion = _to_channels(transposed, channels)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise UnreadableImage(f"{type(error).__name__}: {error}") from error
    fitted, placement = _fit(rgb, size, fit)
    if factors != (1.0, 1.0):
        placement = Placement(
            placement.scale_x / factors[0],
            placement.scale_y / factors[1],
            placement.offset_x,
            placement.offset_y,
            round(placement.width * factors[0]),
            round(placement.height * factors[1]),
        )
    pixels = np.asarray(fitted, dtype=np.uint8)
    return LoadedImage(pixels[..., None] if pixels.ndim == 2 else pixels, placement, conversion)


def _reduced(opened: Image.Image, size: tuple[int, int]) -> tuple[Image.Image, tuple]:
    """The decoded image, reduced while still at least twice `size` on its shorter side.

    A JPEG is decoded at 1/2, 1/4 or 1/8 scale (`draft`); other formats are decoded
    whole and box-filtered down at once, so a 13000×13000 16-bit PNG costs its
    338 MB decode, not a float copy of it. Only images four times larger than the
    model's input are reduced, so that usual photos are fitted exactly as before.

    Returns:
        The loaded image and (x, y) factors from its pixels to the file's.
    """
    width, height = opened.size
    # Either side may become the height once EXIF orientation is applied.
    need = _REDUCE_MARGIN * max(size)
    if min(width, height) >= 2 * need:
        opened.draft(opened.mode, (need, need))
    opened.load()
    image = opened
    factor = min(image.size) // need
    if factor >= 2:
        reduced_size = (max(1, image.width // factor), max(1, image.height // factor))
        image = image.resize(reduced_size, Image.Resampling.BOX)
    if image.size == (width, height):
        return image, (1.0, 1.0)
    return image, (width / image.width, height / image.height)


# Reduced images keep at least this many times the model's input size (then fitted).
_REDUCE_MARGIN = 2
