"""The classic workflow in one call: a ResNet50, one photo, the captioned Grad-CAM overlay as PNG.

    python examples/explain_image.py photo.jpg --weights imagenet --out cam.png

`--weights imagenet` downloads Keras' ImageNet weights (about 100 MB) on first
use, so it needs the network where it runs; `--weights FILE` loads a weights
file you have (e.g. `resnet50_weights_tf_dim_ordering_tf_kernels.h5`). Without
`--weights` the model keeps random weights and says so: the map is then only a
smoke test of the pipeline. Without an image, a synthetic one is used.
"""

from __future__ import annotations

import argparse
import os

FITS = {
    "crop": "centre crop to a square, then resize (the whole square is explained)",
    "letterbox": "resize the long side, pad the short side with grey (nothing is cut)",
}


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="The photo keeps its aspect ratio: "
        + "; ".join(f"--fit {name}: {what}" for name, what in FITS.items())
        + ".",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("image", nargs="?", help="image file; a synthetic image if omitted")
    parser.add_argument(
        "--weights",
        default=None,
        help="'imagenet' (downloads Keras' ResNet50 weights: needs the network) or the path "
        "of a weights file (.h5 / .weights.h5); random weights if omitted",
    )
    parser.add_argument(
        "--class-names",
        metavar="FILE",
        default=None,
        help="text file with one class name per line, in the model's class order; "
        "with --weights imagenet the ImageNet names are used if omitted",
    )
    parser.add_argument("--fit", choices=sorted(FITS), default="crop", help="aspect handling")
    parser.add_argument("--out", default="cam.png", help="where to save the captioned PNG")
    parser.add_argument(
        "--layer", default=None, help="target layer; the last conv block if omitted"
    )
    return parser.parse_args()


def square(image, size: int, fit: str):
    """The photo as a size×size image, keeping its aspect ratio (see FITS)."""
    from PIL import Image, ImageOps

    if fit == "crop":
        return ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)
    return ImageOps.pad(image, (size, size), Image.Resampling.BILINEAR, color=(128, 128, 128))


def load_image(path: str | None, size: int, fit: str):
    import numpy as np
    from PIL import Image

    from keras_cam.data import make_shapes

    if path is None:
        return make_shapes(1, size=size, seed=0).images[0]
    with Image.open(path) as image:
        return np.asarray(square(image.convert("RGB"), size, fit))


def class_name(index: int, names_file: str | None, weights: str | None) -> str:
    if names_file is not None:
        with open(names_file, encoding="utf-8") as lines:
            names = [line.strip() for line in lines if line.strip()]
        return names[index] if index < len(names) else f"class {index}"
    if weights == "imagenet":
        import keras

        # The ImageNet index file also comes from the network (a few KB, cached).
        one_hot = [[float(i == index) for i in range(1000)]]
        return keras.applications.resnet50.decode_predictions(one_hot, top=1)[0][0][1]
    return f"class {index}"


def main() -> None:
    args = parse_arguments()  # before Keras is imported, so that --help answers at once
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    from PIL import Image

    import keras_cam
    from keras_cam.render.overlay import captioned_grid

    if args.weights is None:
        print("No --weights given: using random weights (the map shows the pipeline, not a model).")
    model = keras.applications.ResNet50(weights=args.weights)
    image = load_image(args.image, 224, args.fit)
    result = keras_cam.explain(
        model,
        image[None],
        layer=args.layer,
        preprocess=keras.applications.resnet50.preprocess_input,
    )
    name = class_name(int(result.classes[0]), args.class_names, args.weights)
    caption = f"{name} p={result.confidence[0]:.3f} · Grad-CAM at {result.layer}"
    overlay = keras_cam.overlay(image[None], result.heatmaps)[0]
    Image.fromarray(captioned_grid([[image, overlay]], [caption], min_cell=224)).save(args.out)
    print(f"{caption}; saved {args.out}")


if __name__ == "__main__":
    main()
