"""Try the `keras-cam` command: a saved demo model, a folder of images, the contact sheet.

    python examples/cli_contact_sheet.py --work runs/cli --screenshot docs/cli_contact_sheet.png

Trains the demo's small CNN on the synthetic shapes and saves it as
`WORK/shapes_cnn.keras` (or reuses that file), writes held-out images of several sizes (PNG and
JPEG, one grayscale) to `WORK/photos/` with `WORK/classes.txt`, runs

    keras-cam explain WORK/shapes_cnn.keras WORK/photos --out WORK/cams \\
        --method gradcam,layercam,scorecam --class-names WORK/classes.txt

and, with `--screenshot`, renders `WORK/cams/index.html` from disk in headless
Chromium (`apt install chromium`). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def make_inputs(work: str, epochs: int, count: int) -> list[str]:
    """The saved model, the photos folder and the class names file; returns the command."""
    import keras
    from demo import build_model
    from PIL import Image

    from keras_cam.data import CLASS_NAMES, make_shapes

    model_path = os.path.join(work, "shapes_cnn.keras")
    if os.path.exists(model_path):
        print(f"reusing {model_path} (delete it to train again)")
    else:
        keras.utils.set_random_seed(0)
        train = make_shapes(3000, size=64, seed=1)  # as in the demo
        model = build_model(64, len(CLASS_NAMES))
        model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
        model.fit(train.images, train.labels, epochs=epochs, batch_size=32, verbose=2)
        model.save(model_path)

    photos = os.path.join(work, "photos")
    os.makedirs(photos, exist_ok=True)
    # Most at the model's 64×64, every fourth enlarged and widened: the command fits it back.
    shapes = make_shapes(count, size=64, seed=5)
    for index, image in enumerate(shapes.images):
        picture = Image.fromarray(image)
        if index % 4 == 1:
            picture = picture.resize((160, 128), Image.Resampling.BICUBIC)
        if index % 5 == 2:
            picture = picture.convert("L")
        extension = "jpg" if index % 3 == 0 else "png"
        picture.save(os.path.join(photos, f"shape_{index:02d}.{extension}"))
    names = os.path.join(work, "classes.txt")
    with open(names, "w") as file:
        file.write("\n".join(CLASS_NAMES) + "\n")
    return [
        "explain",
        model_path,
        photos,
        "--out",
        os.path.join(work, "cams"),
        "--overwrite",
        "--method",
        "gradcam,layercam,scorecam",
        "--class-names",
        names,
    ]


def screenshot(page: str, png: str, width: int, height: int) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("Chromium is not installed: apt install chromium")
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--allow-file-access-from-files",
            f"--window-size={width},{height}",
            f"--screenshot={os.path.abspath(png)}",
            "file://" + os.path.abspath(page),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--work", default="runs/cli", help="working folder")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs")
    parser.add_argument("--count", type=int, default=12, help="images to write")
    parser.add_argument(
        "--screenshot", help="render the contact sheet to this PNG (headless Chromium)"
    )
    parser.add_argument("--window", default="1180x940", help="screenshot WIDTHxHEIGHT")
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    command = make_inputs(args.work, args.epochs, args.count)
    print("keras-cam " + " ".join(command))
    # The command runs in its own process, as a user would start it.
    status = subprocess.run([sys.executable, "-m", "keras_cam.cli.command", *command]).returncode
    if status != 0:
        sys.exit(status)
    if args.screenshot:
        width, height = (int(v) for v in args.window.split("x"))
        screenshot(os.path.join(args.work, "cams", "index.html"), args.screenshot, width, height)
        print(f"saved {args.screenshot}")


if __name__ == "__main__":
    main()
