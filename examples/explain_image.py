"""The classic workflow in one call: a ResNet50, one photo, the Grad-CAM overlay saved as PNG.

    python examples/explain_image.py photo.jpg --weights resnet50_weights.h5 --out cam.png

Pretrained weights cannot be downloaded at run time here: pass the path of a
weights file you have (e.g. Keras' `resnet50_weights_tf_dim_ordering_tf_kernels.h5`).
Without `--weights` the model keeps random weights and says so: the map is
then only a smoke test of the pipeline. Without an image, a synthetic one is used.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from PIL import Image

import keras_cam
from keras_cam.data import make_shapes


def load_image(path: str | None, size: int) -> np.ndarray:
    if path is None:
        return make_shapes(1, size=size, seed=0).images[0]
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", help="image file; a synthetic image if omitted")
    parser.add_argument("--weights", help="ResNet50 ImageNet weights file (.h5 / .weights.h5)")
    parser.add_argument("--out", default="cam.png", help="where to save the overlay PNG")
    parser.add_argument("--layer", default=None, help="target layer; default: the last conv block")
    args = parser.parse_args()

    if args.weights is None:
        print("No --weights given: using random weights (the map shows the pipeline, not a model).")
    model = keras.applications.ResNet50(weights=args.weights)
    image = load_image(args.image, 224)
    result = keras_cam.explain(
        model,
        image[None],
        layer=args.layer,
        preprocess=keras.applications.resnet50.preprocess_input,
    )
    side_by_side = np.concatenate([image, keras_cam.overlay(image[None], result.heatmaps)[0]], 1)
    Image.fromarray(side_by_side).save(args.out)
    print(
        f"class {result.classes[0]} (p = {result.scores[0]:.3f}), layer {result.layer!r}; "
        f"saved {args.out}"
    )


if __name__ == "__main__":
    main()
