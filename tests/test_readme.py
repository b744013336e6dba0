"""The README's offline block runs as written, on a small stand-in for ResNet50 (no download)."""

import re
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers
from PIL import Image

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_block(section: str) -> str:
    """The first ```python block after the README heading `section`."""
    text = README.read_text(encoding="utf-8")
    after = text[text.index(f"\n## {section}\n") :]
    return re.search(r"```python\n(.*?)```", after, re.DOTALL).group(1)


def small_resnet50(weights=None, **kwargs) -> keras.Model:
    """ResNet50's interface (224² input, softmax head) and last block's name, four channels."""
    inputs = keras.Input((224, 224, 3))
    x = layers.Conv2D(4, 7, strides=32, padding="same", name="conv1_conv")(inputs)
    x = layers.Activation("relu", name="conv5_block3_out")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(5, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="resnet50")


@pytest.mark.slow
def test_the_offline_block_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(keras.applications, "ResNet50", small_resnet50)
    rng = np.random.default_rng(0)
    for name in ("cat.jpg", "dog.jpg"):
        Image.fromarray(rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)).save(name)
    code = readme_block("Offline")
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    result, several, top = namespace["result"], namespace["several"], namespace["top"]
    # The comments say what comes back.
    assert f'layer: "{result.layer}"' in code
    assert result.heatmaps.shape == (2, 224, 224)
    assert set(several) == {"gradcam", "layercam", "scorecam"}
    assert top.heatmaps.shape == (2, 3, 224, 224)
