"""Attention rollout, gradient-weighted rollout and LeGrad against float64 numpy references.

The tiny ViT below (patchify, class token, two pre-norm blocks of Keras
`MultiHeadAttention`, a class-token head) is run again in numpy float64 from
its weights; the attention gradients are central finite differences of that
numpy forward pass (no autodiff anywhere), and the three maps are the
formulas of jacobgil/vit-explain's `rollout`, Chefer et al.'s
`generate_relevance` and TorchCAM 0.5.0's `LeGrad`, written out here.
"""

import subprocess

import keras
import numpy as np
import pytest
from cli_runs import command
from conftest import checkout_env, read_events
from keras import layers, ops
from scipy.special import erf

import keras_cam
from keras_cam.methods import AttentionRollout, LeGrad

SIZE, PATCH, DIM, HEADS, BLOCKS = (8, 12), 4, 8, 2, 2
CLASSES = [0, 2, 1]


class ClassToken(layers.Layer):
    """Prepends one learned token to the sequence."""

    def build(self, input_shape):
        self.token = self.add_weight(shape=(1, 1, input_shape[-1]), initializer="random_normal")

    def call(self, x):
        return ops.concatenate([ops.tile(self.token, (ops.shape(x)[0], 1, 1)), x], axis=1)


def tiny_vit(class_token: bool = True) -> keras.Model:
    inputs = keras.Input((*SIZE, 3))
    x = layers.Conv2D(DIM, PATCH, strides=PATCH, name="patchify")(inputs)
    x = layers.Reshape((-1, DIM), name="tokens")(x)
    if class_token:
        x = ClassToken(name="class_token")(x)
    for i in range(BLOCKS):
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm1")(x)
        h = layers.MultiHeadAttention(HEADS, DIM // HEADS, name=f"block{i}_attention")(h, h)
        x = layers.Add(name=f"block{i}_mixed")([x, h])
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm2")(x)
        h = layers.Dense(2 * DIM, activation="gelu", name=f"block{i}_mlp1")(h)
        h = layers.Dense(DIM, name=f"block{i}_mlp2")(h)
        x = layers.Add(name=f"block{i}_out")([x, h])
    x = layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    x = x[:, 0] if class_token else layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inputs, layers.Dense(3, name="logits")(x), name="tiny_vit")


def images(count=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (count, *SIZE, 3)).astype("float32")


# ---- the ViT in numpy float64 -------------------------------------------------------------


def weights_of(model):
    return {
        layer.name: [np.asarray(w, np.float64) for w in layer.get_weights()]
        for layer in model.layers
    }


def layer_norm(x, gamma, beta):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(x.var(-1, keepdims=True) + 1e-6) * gamma + beta


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def forward(w, x, deltas=None):
    """Logits, per-block attention (B, H, T, T) and block outputs (B, T, D), float64.

    `deltas[l]` is added to block l's attention probabilities.
    """
    x = np.asarray(x, np.float64)
    n, rows, cols = len(x), SIZE[0] // PATCH, SIZE[1] // PATCH
    patches = x.reshape(n, rows, PATCH, cols, PATCH, 3).transpose(0, 1, 3, 2, 4, 5)
    kernel, bias = w["patchify"]
    z = patches.reshape(n, rows * cols, -1) @ kernel.reshape(-1, DIM) + bias
    if "class_token" in w:
        z = np.concatenate([np.broadcast_to(w["class_token"][0], (n, 1, DIM)), z], axis=1)
    attentions, outputs = [], []
    for i in range(BLOCKS):
        h = layer_norm(z, *w[f"block{i}_norm1"])
        qk, qb, kk, kb, vk, vb, ok, ob = w[f"block{i}_attention"]
        q = (np.einsum("btd,dhk->bthk", h, qk) + qb) / np.sqrt(DIM // HEADS)
        k = np.einsum("btd,dhk->bthk", h, kk) + kb
        v = np.einsum("btd,dhk->bthk", h, vk) + vb
        a = softmax(np.einsum("bqhk,bshk->bhqs", q, k))
        attentions.append(a)
        if deltas is not None and i in deltas:
            a = a + deltas[i]
        mixed = np.einsum("bhqs,bshk->bqhk", a, v)
        z = z + np.einsum("bqhk,hkd->bqd", mixed, ok) + ob
        m1k, m1b = w[f"block{i}_mlp1"]
        m2k, m2b = w[f"block{i}_mlp2"]
        hidden = layer_norm(z, *w[f"block{i}_norm2"]) @ m1k + m1b
        z = z + (0.5 * hidden * (1 + erf(hidden / np.sqrt(2)))) @ m2k + m2b
        outputs.append(z)
    pooled = layer_norm(z, *w["norm"])
    pooled = pooled[:, 0] if "class_token" in w else pooled.mean(1)
    return pooled @ w["logits"][0] + w["logits"][1], attentions, outputs


def head_of_mean(w, z):
    """TorchCAM's LeGrad layer score: head(LN(mean_t z))."""
    return layer_norm(z.mean(1), *w["norm"]) @ w["logits"][0] + w["logits"][1]


def attention_gradients(w, x, classes, score, step=1e-5):
    """d score / d A_l per block by central differences: `score(logits, outputs, l)` -> (B,)."""
    shape = forward(w, x[:1])[1][0].shape[1:]
    basis = np.eye(int(np.prod(shape))).reshape(-1, *shape)
    count, grads = len(basis), []
    for block in range(BLOCKS):
        per_image = []
        for n in range(len(x)):
            copies = np.repeat(x[n : n + 1], count, axis=0)
            totals = []
            for sign in (1, -1):
                logits, _, outputs = forward(w, copies, {block: sign * step * basis})
                totals.append(score(logits, outputs, block)[:, classes[n]])
            per_image.append(((totals[0] - totals[1]) / (2 * step)).reshape(basis.shape[1:]))
        grads.append(np.stack(per_image))
    return grads


# ---- the three formulas, as their reference implementations write them ---------------------


def vit_explain_rollout(attentions, head_fusion="mean", discard_ratio=0.0, fixed=True):
    """jacobgil/vit-explain `vit_rollout.rollout`, for one image (its batch of 1).

    `fixed=False` keeps its `a / a.sum(dim=-1)`, which on a (1, T, T) tensor divides
    column j by row j's sum; `fixed=True` divides each row by its sum (the paper).
    """
    result = np.eye(attentions[0].shape[-1])
    for attention in attentions:
        fused = {"mean": np.mean, "max": np.max, "min": np.min}[head_fusion](attention, axis=0)
        flat = fused.reshape(-1).copy()
        indices = np.argsort(flat, kind="stable")[: int(flat.size * discard_ratio)]
        flat[indices[indices != 0]] = 0
        a = (flat.reshape(fused.shape) + np.eye(len(fused))) / 2
        a = a / (a.sum(-1, keepdims=True) if fixed else a.sum(-1)[None, :])
        result = a @ result
    return result[0, 1:]


def chefer_relevance(attentions, grads):
    """hila-chefer/Transformer-MM-Explainability `generate_relevance` (ViT), one image."""
    relevance = np.eye(attentions[0].shape[-1])
    for cam, grad in zip(attentions, grads, strict=True):
        cam = np.maximum(grad * cam, 0).mean(0)
        relevance = relevance + cam @ relevance
    return relevance[0, 1:]


def torchcam_legrad(grads, prefix=1):
    """TorchCAM 0.5.0 `LeGrad`: relu(grad).mean(heads, queries)[prefix:], mean over layers."""
    return np.mean([np.maximum(g, 0).mean(axis=(1, 2))[:, prefix:] for g in grads], axis=0)


def grid(values):
    return values.reshape(len(values), SIZE[0] // PATCH, SIZE[1] // PATCH)


def assert_close(raw, expected, tolerance=1e-4):
    expected = np.asarray(expected, np.float64)
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(raw, expected, atol=tolerance * scale, rtol=0)


@pytest.fixture(scope="module")
def vit_case():
    keras.utils.set_random_seed(7)
    model = tiny_vit()
    x = images()
    w = weights_of(model)
    logits, attentions, _ = forward(w, x)
    gradients = attention_gradients(w, x, CLASSES, lambda logits, outputs, block: logits)
    layer_gradients = attention_gradients(
        w, x, CLASSES, lambda logits, outputs, block: head_of_mean(w, outputs[block])
    )
    return model, x, logits, attentions, gradients, layer_gradients


def test_rollout_gradient_rollout_and_legrad_equal_their_formulas(vit_case):
    model, x, logits, attentions, gradients, layer_gradients = vit_case
    results = keras_cam.explain(
        model, x, method=["rollout", "gradrollout", "legrad"], targets=CLASSES, verbose=0
    )
    # The numpy forward pass is the model's: the explained logits agree.
    explained = logits[np.arange(len(x)), CLASSES]
    np.testing.assert_allclose(results["legrad"].scores, explained, atol=1e-4)
    each = range(len(x))
    rollout = [vit_explain_rollout([a[n] for a in attentions], fixed=False) for n in each]
    assert_close(results["rollout"].raw, grid(np.stack(rollout)))
    chefer = [chefer_relevance([a[n] for a in attentions], [g[n] for g in gradients]) for n in each]
    assert_close(results["gradrollout"].raw, grid(np.stack(chefer)))
    assert_close(results["legrad"].raw, grid(torchcam_legrad(layer_gradients)))
    assert results["legrad"].layer == "block1_norm1"  # the target layer: not what they read
    # Gradient-weighted rollout and LeGrad explain a class, rollout does not.
    other = keras_cam.explain(
        model, x, method=["rollout", "gradrollout", "legrad"], targets=[1, 0, 2], verbose=0
    )
    np.testing.assert_array_equal(other["rollout"].raw, results["rollout"].raw)
    assert not np.allclose(other["gradrollout"].raw, results["gradrollout"].raw)
    assert not np.allclose(other["legrad"].raw, results["legrad"].raw)


def test_head_fusion_discarding_and_block_and_head_selection(vit_case):
    model, x, _, attentions, _, layer_gradients = vit_case
    # A head whose gradients are all negative has an empty LeGrad map: take one with some.
    head = int(np.argmax(np.maximum(layer_gradients[1], 0).max(axis=(0, 2, 3))))
    results = keras_cam.explain(
        model,
        x,
        method=[
            AttentionRollout("max", discard_ratio=0.5, blocks=[-1, 0]),
            LeGrad(blocks=[1], heads=[head]),
        ],
        targets=CLASSES,
        verbose=0,
    )
    each = range(len(x))
    rollout = [vit_explain_rollout([a[n] for a in attentions], "max", 0.5) for n in each]
    assert_close(results["rollout"].raw, grid(np.stack(rollout)))
    # vit-explain's column-wise division gives another map once the rows do not sum to 1.
    literal = [vit_explain_rollout([a[n] for a in attentions], "max", 0.5, False) for n in each]
    assert not np.allclose(grid(np.stack(literal)), results["rollout"].raw, rtol=1e-2)
    head_one = [layer_gradients[1][:, head : head + 1]]
    assert_close(results["legrad"].raw, grid(torchcam_legrad(head_one)))


def test_a_model_without_attention_and_bad_selections_get_clear_errors(vit_case):
    model = vit_case[0]
    inputs = keras.Input((*SIZE, 3))
    pooled = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, name="conv")(inputs))
    cnn = keras.Model(inputs, layers.Dense(3)(pooled), name="cnn")
    with pytest.raises(ValueError, match=r"no keras.layers.MultiHeadAttention.*method='gradcam'"):
        _ = keras_cam.CAMExplainer(cnn, "rollout").resolved
    with pytest.raises(ValueError, match=r"names block 2.*2 attention layers"):
        _ = keras_cam.CAMExplainer(model, LeGrad(blocks=[2])).resolved
    with pytest.raises(ValueError, match="head_fusion"):
        AttentionRollout("median")
    assert {"rollout", "gradrollout", "legrad"} <= set(keras_cam.available_methods())
    for name in ("rollout", "gradrollout", "legrad"):
        method = keras_cam.methods.get_method(name)
        assert method.paper
        assert "forward" in method.cost


@pytest.mark.slow
def test_kerashub_vit_rollout_equals_its_attention_called_by_hand():
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(3)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(16, 24, 3), patch_size=8, num_layers=3, num_heads=2, hidden_dim=16, mlp_dim=32
    )
    model = keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=3, preprocessor=None)
    x = np.random.default_rng(1).uniform(0, 1, (2, 16, 24, 3)).astype("float32")
    results = keras_cam.explain(model, x, method=["rollout", "gradrollout", "legrad"], verbose=0)
    # The blocks called by hand, asking each attention layer for its probabilities.
    embedding = next(
        layer for layer in backbone.layers if type(layer).__name__ == "ViTPatchingAndEmbedding"
    )
    encoder = next(layer for layer in backbone.layers if type(layer).__name__ == "ViTEncoder")
    tokens, attentions = embedding(ops.convert_to_tensor(x)), []
    for block in encoder.encoder_layers:
        h = block.layer_norm_1(tokens)
        mixed, scores = block.mha(h, h, return_attention_scores=True)
        attentions.append(np.asarray(ops.convert_to_numpy(scores), np.float64))
        tokens = tokens + mixed
        tokens = tokens + block.mlp(block.layer_norm_2(tokens))
    rollout = [vit_explain_rollout([a[n] for a in attentions]) for n in range(len(x))]
    assert_close(results["rollout"].raw, np.stack(rollout).reshape(2, 2, 3))
    with pytest.raises(ValueError, match=r"heads=\[2\] must be head indices 0\.\.1"):
        _ = keras_cam.CAMExplainer(model, AttentionRollout(heads=[2])).resolved
    with pytest.raises(ValueError, match="Drop eigen_smooth=True"):
        keras_cam.explain(model, x, method="rollout", eigen_smooth=True, verbose=0)
    for name in ("gradrollout", "legrad"):
        assert np.isfinite(results[name].raw).all()
        assert results[name].raw.max() > 0


@pytest.mark.slow
def test_callback_and_cli_run_the_attention_methods(tmp_path):
    keras.utils.set_random_seed(5)
    model = tiny_vit(class_token=False)  # built-in layers only: the CLI loads it as saved
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = images(8), np.arange(8) % 3
    callback = keras_cam.CAMCallback(
        x[:2], tmp_path / "logs", method=["rollout", "gradrollout", "legrad"]
    )
    model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    events = read_events(str(tmp_path / "logs"))
    assert {"cam/rollout/grid", "cam/gradrollout/grid", "cam/legrad/grid"} <= set(events)
    model.save(tmp_path / "vit.keras")
    folder = tmp_path / "images"
    folder.mkdir()
    from PIL import Image

    Image.fromarray((x[0] * 255).astype(np.uint8)).save(folder / "a.png")
    done = subprocess.run(
        [
            *command(),
            "explain",
            "vit.keras",
            "images",
            "--out",
            "out",
            "--method",
            "rollout,legrad",
        ],
        cwd=tmp_path,
        env=checkout_env(TF_CPP_MIN_LOG_LEVEL="3"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rollout" in (tmp_path / "out" / "results.csv").read_text()
