"""Image files for the command line: found on disk, decoded, converted to RGB, fitted to a size.

Only Pillow and numpy: nothing here imports Keras, so the command can find its
inputs and refuse bad ones before it pays for loading a backend.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass

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
            the order the arguments were given; duplicates dropped).
        ignored: files in folders or glob matches without an image extension.
        missing: arguments that name no file or folder and match no glob.
    """

    files: list[str]
    ignored: int
    missing: list[str]


def _is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _files_under(folder: str) -> Iterable[str]:
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            yield os.path.join(root, name)


def find_images(specs: Iterable[str]) -> FoundImages:
    """Expands files, folders (recursively) and glob patterns into image files.

    A file named explicitly is always tried, whatever its extension; folders
    and glob matches contribute only files with an extension from
    `IMAGE_EXTENSIONS`, the others are counted as ignored.
    """
    files: dict[str, None] = {}
    ignored, missing = 0, []
    for spec in specs:
        if os.path.isfile(spec):
            files.setdefault(spec)
            continue
        if os.path.isdir(spec):
            candidates = list(_files_under(spec))
        else:
            matches = sorted(glob.glob(spec, recursive=True))
            if not matches:
                missing.append(spec)
                continue
            candidates = []
            for match in matches:
                candidates.extend(_files_under(match) if os.path.isdir(match) else [match])
        for path in candidates:
            if _is_image_name(path):
                files.setdefault(path)
            else:
                ignored += 1
    return FoundImages(files=list(files), ignored=ignored, missing=missing)


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
        values = np.asarray(image, dtype=np.float64)
        # 16-bit files use the whole 0–65535 range; 32-bit ones are read the same way,
        # and float ones as 0–1 when they fit there, else as 0–255.
        if mode == "F":
            values = values * 255.0 if np.nanmax(values, initial=0.0) <= 1.0 else values
            word = "32-bit float"
        else:
            values = values / 257.0
            word = "16-bit"
        gray = np.clip(np.nan_to_num(values), 0, 255).astype(np.uint8)
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
            image = ImageOps.exif_transpose(opened)
            image.load()
            rgb, conversion = _to_channels(image, channels)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise UnreadableImage(f"{type(error).__name__}: {error}") from error
    fitted, placement = _fit(rgb, size, fit)
    pixels = np.asarray(fitted, dtype=np.uint8)
    return LoadedImage(pixels[..., None] if pixels.ndim == 2 else pixels, placement, conversion)
