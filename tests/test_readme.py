"""Every ```python block of the README and the docs pages runs as written; commands exist.

Each block runs in a fresh namespace holding only the free names it uses (the
models and arrays it assumes from the text around it), built by `FIXTURES`:
tiny random models and the synthetic shapes, 1 epoch (`fit` is capped: how
long to train is the reader's choice, not what is tested), nothing downloaded
(`keras.applications.ResNet50` and KerasHub's `ViTBackbone` are replaced by
small stand-ins with the same layer names). What a block's comments say it
returns is checked by `CLAIMS`. A block preceded by `<!-- fragment -->` would be
skipped (none is today), and one preceded by `<!-- not run: REASON -->` is skipped
with that reason (a block that needs pretrained weights; its page says so). The
commands in backticks are checked too: `make` targets exist, and every `--option`
named next to a script is in its `--help`. The pages are README.md and every
Markdown file under docs/ (the MkDocs site).
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import io
import re
import runpy
import symtable
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers
from PIL import Image

import keras_cam
from keras_cam.data import make_sequences, make_shapes, make_volumes

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
TEXTS = {page.relative_to(ROOT).as_posix(): page.read_text(encoding="utf-8") for page in PAGES}
TEXT = "\n\n".join(TEXTS.values())
NOT_RUN = re.compile(r"<!-- not run: (.+) -->")


def page_blocks(page: str, text: str) -> list[tuple[str, str, str | None]]:
    """(`page: heading (k)`, code, why not run) of every ```python block of one page."""
    found, heading = [], ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(("# ", "## ", "### ")):
            heading = line.lstrip("#").strip()
        fence = re.match(r"( *)```(\w*)$", line)
        if fence and fence.group(2) != "python":  # another language: skip its lines
            i = lines.index(f"{fence.group(1)}```", i + 1)
        elif fence:
            end = lines.index(f"{fence.group(1)}```", i + 1)
            code = "\n".join(row[len(fence.group(1)) :] for row in lines[i + 1 : end])
            before = lines[i - 1].strip() if i > 0 else ""
            skip = NOT_RUN.fullmatch(before)
            why = skip.group(1) if skip else "a fragment" if before == "<!-- fragment -->" else None
            found.append((heading, code + "\n", why))
            i = end
        i += 1
    counts = {h: sum(1 for other, *_ in found if other == h) for h, *_ in found}
    seen: dict[str, int] = {}
    named = []
    for heading, code, why in found:
        seen[heading] = seen.get(heading, 0) + 1
        name = f"{heading} ({seen[heading]})" if counts[heading] > 1 else heading
        named.append((f"{page}: {name}", code, why))
    return named


def once(blocks: list[tuple[str, str, str | None]]) -> list[tuple[str, str, str | None]]:
    """A block repeated on another page (the home page's quick start) runs once."""
    first: dict[str, str] = {}
    kept = []
    for name, code, why in blocks:
        repeated = first.setdefault(code, name) != name
        kept.append((name, code, why or (f"the same code as {first[code]}" if repeated else None)))
    return kept


BLOCKS = once([block for page, text in TEXTS.items() for block in page_blocks(page, text)])
pytestmark = pytest.mark.slow  # backend-neutral: once, in the TensorFlow pass


def free_names(code: str) -> set[str]:
    """Names the block reads but neither assigns nor imports (in functions too)."""
    top = symtable.symtable(code, str(README), "exec")
    bound = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    used = set()

    def walk(table: symtable.SymbolTable) -> None:
        for symbol in table.get_symbols():
            if symbol.is_referenced() and (table is top or symbol.is_global()):
                used.add(symbol.get_name())
        for child in table.get_children():
            walk(child)

    walk(top)
    return used - bound - set(dir(builtins))


# --- what the blocks assume ------------------------------------------------------------
# Two image sizes: the training story (`model`, `x_train`, probes, masks) on 32 px shapes,
# and `images` at 224 px for the models explained offline (the ViT block's 14×14 grid).
SIZE, PHOTO = 32, 224


@functools.cache
def shapes(n: int, seed: int):
    return make_shapes(n, size=SIZE, seed=seed)


def shapes_model() -> keras.Model:
    """The demo's architecture in miniature: a `last_conv` layer, GAP → softmax head."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="last_conv")(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, layers.Dense(3, activation="softmax")(x), name="shapes_cnn")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def photo_model(head, *, name: str, size: int = PHOTO, stride: int = 16) -> keras.Model:
    """A strided conv backbone on `size`² images and the given head."""
    inputs = keras.Input((size, size, 3))
    x = layers.Conv2D(6, stride, strides=stride, activation="relu", name="features")(inputs)
    return keras.Model(inputs, head(x), name=name)


def pooled(units: int, activation: str | None = None):
    def head(x):
        x = layers.GlobalAveragePooling2D()(x)
        return layers.Dense(units, activation=activation)(x)

    return head


def two_headed() -> keras.Model:
    def heads(x):
        x = layers.GlobalAveragePooling2D()(x)
        return [
            layers.Dense(3, activation="softmax", name="kind")(x),
            layers.Dense(1, name="size")(x),
        ]

    return photo_model(heads, name="m")


def column_vit() -> keras.Model:
    """A token model whose 4×6 grid is stored column by column, tokens at `block1_out`."""
    inputs = keras.Input((PHOTO, PHOTO, 3))
    x = layers.Conv2D(8, (56, 37), strides=(56, 37), name="patches")(inputs)  # (4, 6, 8)
    x = layers.Permute((2, 1, 3))(x)  # columns first
    x = layers.Reshape((24, 8))(x)
    x = layers.Dense(8, activation="relu", name="block1_out")(x)
    x = layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, layers.Dense(3)(x), name="column_vit")


def vit() -> keras.Model:
    """A pre-norm ViT on the photos: 7 × 7 patch tokens, 2 blocks of 4-head attention."""
    inputs = keras.Input((PHOTO, PHOTO, 3))
    x = layers.Conv2D(16, 32, strides=32, name="patchify")(inputs)
    x = layers.Reshape((-1, 16), name="tokens")(x)
    for i in range(2):
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm1")(x)
        h = layers.MultiHeadAttention(4, 4, name=f"block{i}_attention")(h, h)
        x = layers.Add(name=f"block{i}_mixed")([x, h])
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm2")(x)
        h = layers.Dense(32, activation="gelu", name=f"block{i}_mlp1")(h)
        x = layers.Add(name=f"block{i}_out")([x, layers.Dense(16, name=f"block{i}_mlp2")(h)])
    x = layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inputs, layers.Dense(3, name="logits")(x), name="vit")


def sequence_model() -> keras.Model:
    inputs = keras.Input((128, 1))
    x = layers.Conv1D(6, 5, strides=4, padding="same", activation="relu")(inputs)
    x = layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, layers.Dense(3, activation="softmax")(x), name="conv1d")


def volume_model() -> keras.Model:
    inputs = keras.Input((16, 16, 16, 1))
    x = layers.Conv3D(4, 3, strides=4, padding="same", activation="relu")(inputs)
    x = layers.GlobalAveragePooling3D()(x)
    return keras.Model(inputs, layers.Dense(3, activation="softmax")(x), name="conv3d")


def tiny_retinanet_224():
    from conftest import tiny_retinanet

    return tiny_retinanet(PHOTO, num_classes=3)  # the block explains class 2


def photos(n: int = 2) -> np.ndarray:
    return np.random.default_rng(1).uniform(0, 255, (n, PHOTO, PHOTO, 3)).astype("float32")


def annotated() -> np.ndarray:
    return np.arange(32) % 5 == 0  # a fifth of the training images have a mask


FIXTURES = {
    "keras": lambda: keras,
    "np": lambda: np,
    "keras_cam": lambda: keras_cam,
    "model": shapes_model,
    "names": lambda: shapes(32, 0).class_names,
    "x_train": lambda: shapes(32, 0).images,
    "y_train": lambda: shapes(32, 0).labels,
    "x": lambda: shapes(32, 0).images,
    "y": lambda: shapes(32, 0).labels,
    "masks": lambda: shapes(32, 0).masks.copy(),
    "annotated": annotated,
    "x_val": lambda: shapes(48, 1).images,
    "y_val": lambda: shapes(48, 1).labels,
    "masks_val": lambda: shapes(48, 1).masks,
    "probe": lambda: (shapes(48, 1).images[:16], shapes(48, 1).labels[:16]),
    "probe_masks": lambda: shapes(48, 1).masks[:16],
    "x_probe": lambda: shapes(48, 1).images[:16],
    "y_probe": lambda: shapes(48, 1).labels[:16],
    "object_masks": lambda: shapes(48, 1).masks[:16],
    "images": photos,
    "cnn": lambda: photo_model(pooled(3, "softmax"), name="cnn"),
    "column_vit": column_vit,
    "vit": vit,
    "conv1d": sequence_model,
    "conv3d": volume_model,
    "signals": lambda: make_sequences(4).images,
    "volumes": lambda: make_volumes(2).images,
    "volume_masks": lambda: make_volumes(2).masks,
    "segmenter": lambda: photo_model(
        lambda x: layers.Conv2D(2, 1, activation="softmax")(x), name="segmenter"
    ),
    "age_model": lambda: photo_model(pooled(1), name="age", size=SIZE, stride=4),
    "faces": lambda: shapes(32, 0).images[:2],
    "embedder": lambda: photo_model(pooled(8), name="embedder"),
    "anchor_embedding": lambda: np.random.default_rng(2).normal(size=8).astype("float32"),
    "tagger": lambda: photo_model(pooled(4, "sigmoid"), name="tagger"),
    "two_headed": two_headed,
    "retinanet": tiny_retinanet_224,
}


def small_resnet50(weights=None, **kwargs) -> keras.Model:
    """ResNet50's interface (224² input, softmax head) and last block's name, four channels."""
    inputs = keras.Input((224, 224, 3))
    x = layers.Conv2D(4, 7, strides=32, padding="same", name="conv1_conv")(inputs)
    x = layers.Activation("relu", name="conv5_block3_out")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(5, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="resnet50")


def small_vit_backbone(original):
    """ViTBackbone with the README's grid and depth but width 8, one head: same layer names."""

    def build(**config):
        return original(**{**config, "num_heads": 1, "hidden_dim": 8, "mlp_dim": 8})

    return build


def comment(code: str, marker: str) -> str:
    """The comment on the line that ends in `marker`."""
    return re.search(rf"{re.escape(marker)}\s*#\s*(.*)", code).group(1)


def check_offline(ns: dict, code: str) -> None:
    result, several, top = ns["result"], ns["several"], ns["top"]
    assert f'layer: "{result.layer}"' in code
    assert result.heatmaps.dtype == np.float32
    assert result.heatmaps.shape == (2, 224, 224)
    assert result.heatmaps.min() >= 0
    assert result.heatmaps.max() <= 1
    assert result.raw.dtype == np.float32
    assert result.raw.shape == (2, 7, 7)
    assert result.raw.min() >= 0  # after ReLU
    drawn = keras_cam.overlay(ns["images"], result.heatmaps)
    assert drawn.dtype == np.uint8
    assert drawn.shape == (2, 224, 224, 3)
    assert set(several) == {"gradcam", "layercam", "scorecam"}
    assert top.heatmaps.shape == (2, 3, 224, 224)


def check_vit(ns: dict, code: str) -> None:
    assert ns["result"].layer == comment(code, "result.layer").split('"')[1]
    assert ns["result"].raw.shape == (2, 14, 14)


def check_rank(ns: dict, code: str) -> None:
    assert ns["result"].heatmaps.shape == ns["volumes"].shape[:4]  # the last one: volumes


def check_cells(ns: dict, code: str) -> None:
    data, result = ns["data"], ns["result"]
    assert result.heatmaps.shape == data.images.shape[:4] == (16, 16, 16, 16)
    assert data.masks.shape == (16, 16, 16, 16)
    assert data.class_names == ("ball", "plate", "rod")
    sequences = make_sequences(64)
    assert sequences.images.shape == (64, 128, 1)
    assert sequences.masks.shape == (64, 128)
    assert sequences.class_names == ("bump", "square", "chirp")
    assert ns["cell"].shape == (74, 192, 3)  # the text: volume_cell is 192×74 px


def check_acting(ns: dict, code: str) -> None:
    assert len(ns["history"].history["cam_gradcam_energy_in_mask"]) == 1


def check_guided(ns: dict, code: str) -> None:
    assert Path("fine_tuned.keras").exists()


def check_quick_start(ns: dict, code: str) -> None:
    assert ns["result"].heatmaps.shape == (2, 224, 224)
    assert ns["overlays"].dtype == np.uint8
    assert ns["overlays"].shape == (2, 224, 224, 3)


KINDS = "docs/guide/model-kinds.md:"
ACTING = "docs/guide/acting.md: Acting on the maps: logs, alarms, galleries, CAM-guided fine-tuning"
CLAIMS = {
    "README.md: Quick start: `explain()` offline": check_quick_start,
    "docs/guide/offline.md: Offline: explain()": check_offline,
    f"{KINDS} Vision transformers (1)": check_vit,
    f"{KINDS} 1-D sequences and 3-D volumes": check_rank,
    f"{KINDS} Sequences and volumes in TensorBoard": check_cells,
    f"{ACTING} (1)": check_acting,
    f"{ACTING} (4)": check_guided,
}


def one_epoch(fit):
    @functools.wraps(fit)
    def capped(self, *args, **kwargs):
        return fit(self, *args, **{**kwargs, "epochs": 1})

    return capped


@contextlib.contextmanager
def fresh_default_summary_writer(directory):
    """Under TensorFlow, a live default `tf.summary` writer while the block runs.

    Keras' TensorBoard callback writes its `batch_*` scalars to whatever default
    writer the thread has; in this long test process an earlier test can leave
    a closed one there (a user's fresh process has none), which would fail the
    block for a reason that is not the README's.
    """
    if keras.backend.backend() != "tensorflow":
        yield
        return
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(directory / "stray_summaries"))
    with writer.as_default():
        yield
    writer.close()


def run_block(code: str) -> dict:
    """Executes the block in a namespace holding the free names it uses."""
    missing = free_names(code) - set(FIXTURES)
    assert not missing, f"the block uses {sorted(missing)}, which no fixture provides"
    namespace = {name: FIXTURES[name]() for name in free_names(code)}
    exec(compile(code, str(README), "exec"), namespace)
    return namespace


def test_every_python_block_is_found():
    assert len(BLOCKS) >= 18
    assert sum(name.startswith("README.md") for name, *_ in BLOCKS) >= 3
    assert set(CLAIMS) <= {name for name, *_ in BLOCKS}


@pytest.mark.parametrize(("code", "why"), [b[1:] for b in BLOCKS], ids=[b[0] for b in BLOCKS])
def test_readme_block_runs_as_written(code, why, request, tmp_path, monkeypatch):
    if why:
        pytest.skip(f"not run: {why}")
    import keras_hub

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(keras.applications, "ResNet50", small_resnet50)
    monkeypatch.setattr(
        keras_hub.models, "ViTBackbone", small_vit_backbone(keras_hub.models.ViTBackbone)
    )
    monkeypatch.setattr(keras.Model, "fit", one_epoch(keras.Model.fit))
    rng = np.random.default_rng(0)
    for name in ("cat.jpg", "dog.jpg"):
        Image.fromarray(rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)).save(name)
    keras.backend.clear_session()  # layer names as in a fresh process (no `_1` suffixes)
    with fresh_default_summary_writer(tmp_path):
        namespace = run_block(code)
    block = request.node.callspec.id
    if block in CLAIMS:
        CLAIMS[block](namespace, code)


# --- the commands ------------------------------------------------------------------------


def paragraphs() -> list[tuple[str, str]]:
    """(section heading, paragraph) pairs."""
    found, heading = [], ""
    for paragraph in re.split(r"\n\s*\n", TEXT):
        for line in paragraph.splitlines():
            if re.match(r"#{1,3} ", line):
                heading = line.lstrip("#").strip()
        found.append((heading, paragraph))
    return found


def help_text(script: Path) -> str:
    """`script --help`, run in this process (the scripts parse before any heavy work)."""
    out = io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.suppress(SystemExit),
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.setattr("sys.argv", [str(script), "--help"])
        patch.syspath_prepend(str(ROOT / "examples"))
        runpy.run_path(str(script), run_name="__main__")
    return out.getvalue()


def cli_help() -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        from keras_cam.cli.command import build_parser

        build_parser().parse_args(["explain", "--help"])
    return out.getvalue()


def test_make_targets_named_in_the_readme_exist():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    named = set(re.findall(r"`make ([\w-]+)", TEXT))
    assert named
    assert named <= targets, named - targets


def test_options_named_in_the_readme_are_in_the_scripts_help():
    """Every `--option` in backticks is in the --help of the script its paragraph names."""
    helps: dict[str, str] = {}
    checked = 0
    for heading, paragraph in paragraphs():
        spans = [
            s
            for s in re.findall(r"`([^`\n]*--[^`\n]*)`", paragraph)
            # Other tools' commands (tensorboard, python -m build, mkdocs) have their own options.
            if not s.startswith(("tensorboard", "python -m", "pip ", "mkdocs"))
            and "samples_per_plugin" not in s
        ]
        if not spans:
            continue
        scripts = set(re.findall(r"((?:examples|benchmarks)/\w+\.py)", paragraph))
        scripts |= {f"benchmarks/{s}" for s in re.findall(r"`(bench_\w+\.py)", paragraph)}
        if not scripts:
            assert "command line" in heading.lower() or any("keras-cam" in s for s in spans), spans
            scripts = {"keras-cam explain"}
        known = ""
        for script in scripts:
            if script not in helps:
                path = ROOT / script
                helps[script] = cli_help() if script == "keras-cam explain" else help_text(path)
            known += helps[script]
        for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", " ".join(spans)):
            assert re.search(rf"{option}\b", known), f"{option} is not in {sorted(scripts)}"
            checked += 1
    assert checked >= 20


def test_block_names_are_free_names():
    """The fixture machinery itself: what counts as a name a block assumes."""
    code = "import a\nb = c + a\ndef f(t):\n    return ops.x(t) + b\nd[0] = 1\n"
    assert free_names(code) == {"c", "ops", "d"}
