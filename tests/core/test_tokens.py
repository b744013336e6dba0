"""Vision transformers: token maps, layers called inside a layer, the default layer.

Every map is checked against an independent computation: the model's layers
called one after another by hand up to the target, the active backend's own
autodiff (`conftest.gradient`: tf.GradientTape, jax.grad, torch.autograd)
from there to the class logit, and Grad-CAM's formula in numpy on the patch
tokens. KerasHub models are built from tiny constructor configs with random
weights; nothing is downloaded.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import gradient, read_events, to_numpy
from keras import layers, ops

import keras_cam
from keras_cam.core.capture import scale_blind
from keras_cam.core.tokens import TokenGrid, detect_grid
from keras_cam.methods import ISCAM, SSCAM, AblationCAM, ScoreCAM

keras_hub = pytest.importorskip("keras_hub")

CLASSES = [0, 2, 1]


class ClassToken(layers.Layer):
    """Prepends one learned token to the sequence."""

    def build(self, input_shape):
        self.token = self.add_weight(shape=(1, 1, input_shape[-1]), initializer="random_normal")

    def call(self, x):
        return ops.concatenate([ops.tile(self.token, (ops.shape(x)[0], 1, 1)), x], axis=1)


def hand_vit(
    size=(16, 24), patch=4, dim=8, blocks=2, class_token=False, activation=None, columns=False
) -> keras.Model:
    """A Keras ViT built from graph layers: patchify, blocks of attention and MLP, a head.

    With `class_token` the head reads the class token only; else it averages the tokens.
    With `columns` the tokens are stored column by column.
    """
    inputs = keras.Input((*size, 3))
    x = layers.Conv2D(dim, patch, strides=patch, name="patchify")(inputs)
    if columns:
        x = layers.Permute((2, 1, 3), name="columns_first")(x)
    x = layers.Reshape((-1, dim), name="tokens")(x)
    if class_token:
        x = ClassToken(name="class_token")(x)
    for i in range(blocks):
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm1")(x)
        h = layers.MultiHeadAttention(2, dim // 2, name=f"block{i}_attention")(h, h)
        x = layers.Add(name=f"block{i}_mixed")([x, h])
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm2")(x)
        h = layers.Dense(2 * dim, activation="gelu", name=f"block{i}_mlp1")(h)
        h = layers.Dense(dim, name=f"block{i}_mlp2")(h)
        x = layers.Add(name=f"block{i}_out")([x, h])
    x = layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    x = x[:, 0] if class_token else layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = layers.Dense(3, activation=activation, name="logits")(x)
    return keras.Model(inputs, outputs, name="hand_vit")


def images(size, count=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, size=(count, *size, 3)).astype("float32")


def compiled(fn):
    """`fn` jitted under JAX, whose eager mode compiles op by op (minutes for a ViT)."""
    if keras.backend.backend() != "jax":
        return fn
    import jax

    return jax.jit(fn)


def reference_gradcam(before, after, x, grid, classes=CLASSES):
    """Grad-CAM from activations `before(x)` and the gradient of `after(a)[class]` w.r.t. them.

    `grid` is a `TokenGrid`, or a numpy function from the tokens to the map.
    """
    a = to_numpy(compiled(before)(ops.convert_to_tensor(x)))
    picked = ops.convert_to_tensor(np.array(classes)[:, None])
    g = gradient(compiled(lambda v: ops.take_along_axis(after(v), picked, axis=1)), a)

    def grid_of(tokens):
        if not isinstance(grid, TokenGrid):
            return grid(tokens)
        return tokens[:, grid.prefix :].reshape(len(x), grid.height, grid.width, -1)

    a, g = grid_of(a.astype(np.float64)), grid_of(g.astype(np.float64))
    weights = g.mean(axis=(1, 2))
    return np.maximum((weights[:, None, None, :] * a).sum(-1), 0.0), g


def assert_agrees(result, expected):
    assert result.raw.shape == expected.shape
    assert expected.max() > 0, "the reference map is empty: pick another input"
    correlation = np.corrcoef(result.raw.ravel(), expected.ravel())[0, 1]
    assert correlation >= 0.999, correlation


def graph_reference(model, path, x):
    target = model.get_layer(path).output
    before = keras.Model(model.input, target)
    after = keras.Model(target, model.output)
    return before, after


def cosines(before, after, x, grid):
    """|cos| between each patch token's activation and its gradient (independent tape)."""
    a = to_numpy(compiled(before)(ops.convert_to_tensor(x))).astype(np.float64)
    _, g = reference_gradcam(before, after, x, grid)
    a = a[:, grid.prefix :].reshape(g.shape)
    return np.abs((a * g).sum(-1)) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(g, axis=-1))


def at_first_norm(block_input, norm, rest, x):
    """`before`/`after` at a block's first norm's output, the block's input (its residual
    branch) held at its value for `x`: `rest(v, residual)` runs the block on from there."""
    residual = ops.convert_to_tensor(to_numpy(compiled(block_input)(ops.convert_to_tensor(x))))
    return (lambda v: norm(block_input(v))), (lambda v: rest(v, residual))


def hand_vit_at_last_first_norm(model, x, last=1):
    """The hand-built class-token ViT split at block `last`'s first LayerNorm."""
    block_input = keras.Model(model.input, model.get_layer(f"block{last - 1}_out").output)

    def rest(v, residual):
        h = residual + model.get_layer(f"block{last}_attention")(v, v)
        mlp = model.get_layer(f"block{last}_norm2"), model.get_layer(f"block{last}_mlp1")
        h = h + model.get_layer(f"block{last}_mlp2")(mlp[1](mlp[0](h)))
        return model.get_layer("logits")(model.get_layer("norm")(h)[:, 0])

    return at_first_norm(block_input, model.get_layer(f"block{last}_norm1"), rest, x)


@pytest.mark.parametrize("epsilon", [1e-6, 1e-3])
def test_a_tensor_seen_only_through_a_layer_norm_is_scale_blind(epsilon):
    """The LayerNorm's gradient in closed form: Euler's zero, up to its epsilon."""
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 1.5, size=(2, 10, 16))  # (N, T, D) tokens
    w = rng.normal(size=16)  # the score: w · LN(x_t), summed over the tokens
    centred = x - x.mean(-1, keepdims=True)
    std = np.sqrt((centred**2).mean(-1, keepdims=True) + epsilon)
    y = centred / std
    # d(w · y)/dx = (w - mean(w) - y (y · w) / D) / std, epsilon included.
    through_norm = (w - w.mean() - y * (y @ w)[..., None] / 16) / std
    assert scale_blind(x, through_norm)
    # A residual branch that also reads x (a block's input) is not blind; nor is a random
    # gradient, and a zero one has nothing to judge.
    assert not scale_blind(x, through_norm + 0.1 * rng.normal(size=x.shape))
    assert not scale_blind(x, rng.normal(size=x.shape))
    assert not scale_blind(x, np.zeros_like(x))


class NormalisedMean(layers.Layer):
    """A LayerNorm and a mean over the tokens in one layer: a normalisation keras_cam does not
    know, so no candidate comes after the tokens it reads."""

    def call(self, tokens):
        centred = tokens - ops.mean(tokens, axis=-1, keepdims=True)
        return ops.mean(centred / ops.sqrt(ops.mean(centred**2, -1, keepdims=True) + 1e-6), 1)


def test_when_only_scale_blind_layers_carry_gradient_the_default_warns():
    inputs = keras.Input((16, 24, 3))
    x = layers.Conv2D(8, 4, strides=4, name="patchify")(inputs)
    x = layers.Reshape((-1, 8), name="tokens")(x)
    x = layers.Dense(8, use_bias=False, name="mix")(x)  # linear: blind behind the norm too
    model = keras.Model(inputs, layers.Dense(3)(NormalisedMean()(x)), name="blind_vit")
    with pytest.warns(UserWarning, match=r"'mix' .*\(pass layer= its /-path\)"):
        explainer = keras_cam.CAMExplainer(model)
    assert explainer.layer == "mix"


@pytest.mark.slow
def test_hand_built_vit_with_mean_pooling_explains_its_final_norm_non_square():
    model = hand_vit()
    x = images((16, 24))
    explainer = keras_cam.CAMExplainer(model)
    result = explainer(x, targets=CLASSES)
    assert result.layer == "norm"
    assert explainer._split.capture.grid == TokenGrid(4, 6, prefix=0)
    assert result.raw.shape == (3, 4, 6)
    assert result.heatmaps.shape == (3, 16, 24)
    expected, _ = reference_gradcam(*graph_reference(model, "norm", x), x, TokenGrid(4, 6))
    assert_agrees(result, expected)
    explainer(x, targets=[1, 1, 0])
    assert explainer.trace_count == 1


def test_class_token_head_defaults_to_the_last_blocks_first_norm():
    model = hand_vit(class_token=True)
    x = images((16, 24), seed=1)
    grid = TokenGrid(4, 6, prefix=1)
    # At the last block's output only the class token carries gradient: the map is empty.
    _, last_gradients = reference_gradcam(*graph_reference(model, "block1_out", x), x, grid)
    assert np.all(last_gradients == 0)
    # At its input the patch tokens reach the score only through its first LayerNorm, which
    # ignores each token's scale: by Euler's theorem every token's gradient is orthogonal
    # to its activation (HiResCAM is zero there), unlike at that LayerNorm's output. (Up to
    # the norm's epsilon, ViTs' 1e-6 here: the cosine is epsilon / (variance + epsilon).)
    assert cosines(*graph_reference(model, "block0_out", x), x, grid).max() < 1e-4
    assert cosines(*hand_vit_at_last_first_norm(model, x), x, grid).max() > 0.1

    result = keras_cam.explain(model, x, targets=CLASSES)
    assert result.layer == "block1_norm1"
    expected, _ = reference_gradcam(*hand_vit_at_last_first_norm(model, x), x, grid)
    assert_agrees(result, expected)
    with pytest.warns(UserWarning, match="orthogonal to its activation at every position"):
        keras_cam.CAMExplainer(model, layer="block0_out")


def vit_classifier(pooling="token", size=(32, 48), blocks=3):
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(*size, 3),
        patch_size=8,
        num_layers=blocks,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
    )
    return keras_hub.models.ViTImageClassifier(
        backbone=backbone, num_classes=3, pooling=pooling, preprocessor=None
    )


def vit_pieces(model, cut):
    """The KerasHub ViT's layers called by hand: (input -> block `cut`'s output, the rest)."""
    backbone = model.backbone
    embedding = backbone.get_layer("vit_patching_and_embedding")
    encoder = backbone.get_layer("vit_encoder")
    blocks = encoder.encoder_layers

    def before(x):
        x = embedding(x)
        for block in blocks[:cut]:
            x = block(x)
        return x

    def after(x):
        for block in blocks[cut:]:
            x = block(x)
        x = encoder.layer_norm(x)
        x = x[:, 0] if model.pooling == "token" else ops.mean(x, axis=1)
        return model.output_dense(x)

    return before, after


def test_kerashub_vit_default_is_the_last_blocks_first_norm_inside_the_encoder():
    model = vit_classifier(blocks=2)
    x = images((32, 48), seed=2)
    explainer = keras_cam.CAMExplainer(model)
    result = explainer(x, targets=CLASSES)
    assert result.layer == f"{model.backbone.name}/vit_encoder/transformer_block_2/ln_1"
    grid = explainer._split.capture.grid
    assert grid == TokenGrid(4, 6, prefix=1)
    encoder = model.backbone.get_layer("vit_encoder")
    last = encoder.encoder_layers[-1]

    def rest(v, residual):
        h = residual + last.mha(v, v)
        h = h + last.mlp(last.layer_norm_2(h))
        return model.output_dense(encoder.layer_norm(h)[:, 0])

    before, after = at_first_norm(vit_pieces(model, 1)[0], last.layer_norm_1, rest, x)
    expected, _ = reference_gradcam(before, after, x, grid)
    assert_agrees(result, expected)
    explainer(x, targets=[2, 2, 2])
    assert explainer.trace_count == 1


def with_class_0_along_the_mean_token(model, x):
    """Sets class 0's kernel of a mean-pooled KerasHub ViT along its mean final token.

    Behind the mean, a token's map value is its share of the logit, `kernel · token`. A
    random ViT's tokens are nearly parallel, so every share of every class can be negative
    (an empty map); along the mean token, class 0's map has peaks.
    """
    tokens = to_numpy(
        vit_pieces(model, len(model.backbone.get_layer("vit_encoder").encoder_layers))[0](x)
    )
    final = to_numpy(model.backbone.get_layer("vit_encoder").layer_norm(tokens))
    kernel = to_numpy(model.output_dense.kernel)
    kernel[:, 0] = final[:, 1:].mean(axis=(0, 1))
    model.output_dense.kernel.assign(kernel)


@pytest.mark.slow
def test_kerashub_vit_paths_into_the_encoder_and_mean_pooling():
    model = vit_classifier(pooling="gap")
    x = images((32, 48), seed=3)
    norm = model.backbone.get_layer("vit_encoder").layer_norm
    before = vit_pieces(model, 3)[0]
    classes = [0, 0, 0]
    with_class_0_along_the_mean_token(model, x)
    result = keras_cam.explain(model, x, targets=classes)
    assert result.layer == f"{model.backbone.name}/vit_encoder/ln"  # read by the mean only
    grid = TokenGrid(4, 6, prefix=1)

    def after(v):
        return model.output_dense(ops.mean(v, axis=1))

    expected = reference_gradcam(lambda v: norm(before(v)), after, x, grid, classes)[0]
    assert_agrees(result, expected)
    # Any block by its `/`-path or its own name.
    result = keras_cam.explain(model, x, layer="transformer_block_1", targets=CLASSES)
    assert result.layer == f"{model.backbone.name}/vit_encoder/transformer_block_1"
    assert_agrees(result, reference_gradcam(*vit_pieces(model, 1), x, grid)[0])


@pytest.mark.slow
def test_kerashub_deit_drops_class_and_distillation_tokens():
    backbone = keras_hub.models.DeiTBackbone(
        image_shape=(32, 48, 3),
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
    )
    model = keras_hub.models.DeiTImageClassifier(
        backbone=backbone, num_classes=3, preprocessor=None
    )
    x = images((32, 48), seed=4)
    explainer = keras_cam.CAMExplainer(model)
    result = explainer(x, targets=CLASSES)
    assert result.layer == f"{backbone.name}/deit_encoder/transformer_block_2/ln_1"
    grid = explainer._split.capture.grid
    assert grid == TokenGrid(4, 6, prefix=2)
    embedding = backbone.get_layer("deit_patching_and_embedding")
    encoder = backbone.get_layer("deit_encoder")
    first, last = encoder.encoder_layers

    def rest(v, residual):
        h = residual + last.mha(v, v)
        h = last.output_layer(last.mlp(last.layer_norm_2(h)), h)
        return model.output_dense(encoder.layer_norm(h)[:, 0])

    before, after = at_first_norm(lambda v: first(embedding(v))[0], last.layer_norm_1, rest, x)
    expected, _ = reference_gradcam(before, after, x, grid)
    assert_agrees(result, expected)


def dinov2_with_head(size=42):
    backbone = keras_hub.models.DINOV2Backbone(
        patch_size=14,
        num_layers=2,
        hidden_dim=16,
        num_heads=2,
        intermediate_dim=32,
        num_register_tokens=4,
        image_shape=(size, size, 3),
        position_embedding_shape=(size, size, 3),
    )
    inputs = backbone.input  # {"images": ...}
    outputs = layers.Dense(3, name="head")(backbone(inputs)[:, 0])
    return keras.Model(inputs, outputs, name="dinov2_classifier"), backbone


@pytest.mark.slow
def test_dinov2_with_registers_and_a_dict_input():
    model, backbone = dinov2_with_head()
    x = images((42, 42), seed=5)
    explainer = keras_cam.CAMExplainer(model)
    result = explainer(x, targets=CLASSES)
    assert result.layer == f"{backbone.name}/encoder/layers_1/norm1"
    grid = explainer._split.capture.grid
    assert grid == TokenGrid(3, 3, prefix=5)  # class token and 4 registers
    first, last = backbone.encoder.layers

    def rest(v, residual):
        h = residual + last.layer_scale1(last.attention(v))
        h = h + last.layer_scale2(last.mlp(last.norm2(h)))
        return model.get_layer("head")(backbone.layernorm(h)[:, 0])

    before, after = at_first_norm(lambda v: first(backbone.embeddings(v)), last.norm1, rest, x)
    expected, _ = reference_gradcam(before, after, x, grid)
    assert_agrees(result, expected)


@pytest.mark.slow
def test_swin_last_stage_on_its_downsampled_grid():
    backbone = keras_hub.models.SwinTransformerBackbone(
        image_shape=(32, 32, 3),
        embed_dim=8,
        depths=(2, 2),
        num_heads=(1, 2),
        window_size=4,
        patch_size=4,
    )
    model = keras_hub.models.SwinTransformerImageClassifier(
        backbone=backbone, num_classes=3, preprocessor=None
    )
    x = images((32, 32), seed=6)
    explainer = keras_cam.CAMExplainer(model)
    result = explainer(x, targets=CLASSES)
    assert result.layer == f"{backbone.name}/norm"  # the final norm, read by the mean only
    grid = explainer._split.capture.grid
    assert grid == TokenGrid(4, 4, prefix=0)  # 8×8 patches merged once
    stage0, stage1 = backbone.stages

    def before(v):
        v = stage0(backbone.patch_embedding(v))
        for block in stage1.blocks:
            v = block(v)
        return backbone.norm(v)

    def after(v):
        return model.output_dense(ops.mean(v, axis=1))

    expected, _ = reference_gradcam(before, after, x, grid)
    assert_agrees(result, expected)


class Patches(layers.Layer):
    """A layer that declares its patch size, as KerasHub's patch embeddings do."""

    patch_size = 14


def test_token_grid_detection():
    plain = keras.Sequential([layers.Identity()])
    # No patch size declared: the aspect rule finds 4×6 with no prefix, 2×3 after 1.
    assert detect_grid(plain, 24, (16, 24)) == TokenGrid(4, 6, 0)
    assert detect_grid(plain, 7, (16, 24)) == TokenGrid(2, 3, 1)
    assert detect_grid(plain, 29, (16, 24)) == TokenGrid(4, 6, 5)
    assert detect_grid(plain, 200, (16, 24)) is None
    # A declared patch size wins over the aspect rule: 5 + 2×2 (DINOv2's class token and
    # 4 registers), not 3×3.
    assert detect_grid(plain, 9, (28, 28)) == TokenGrid(3, 3, 0)
    assert detect_grid(keras.Sequential([Patches()]), 9, (28, 28)) == TokenGrid(2, 2, 5)
    grid = TokenGrid(2, 3, prefix=1)
    tokens = np.arange(2 * 7 * 4, dtype="float32").reshape(2, 7, 4)
    np.testing.assert_array_equal(
        to_numpy(grid(ops.convert_to_tensor(tokens))), tokens[:, 1:].reshape(2, 2, 3, 4)
    )
    with pytest.raises(ValueError, match="height must be an integer >= 1"):
        TokenGrid(0, 6)


def columns_first(tokens):
    """6 columns of 4 tokens -> the (N, 4, 6, D) map: a layout no TokenGrid describes."""
    return ops.transpose(ops.reshape(tokens, (-1, 6, 4, tokens.shape[-1])), (0, 2, 1, 3))


def test_tokens_function_rearranges_a_layout_no_grid_describes():
    model = hand_vit(columns=True)
    x = images((16, 24), seed=9)
    explainer = keras_cam.CAMExplainer(model, tokens=columns_first)
    result = explainer(x, targets=CLASSES)
    assert result.layer == "norm"
    assert result.raw.shape == (3, 4, 6)

    def numpy_columns_first(tokens):
        return tokens.reshape(len(tokens), 6, 4, -1).transpose(0, 2, 1, 3)

    before, after = graph_reference(model, "norm", x)
    assert_agrees(result, reference_gradcam(before, after, x, numpy_columns_first)[0])
    explainer(x, targets=[1, 1, 0])
    assert explainer.trace_count == 1


@pytest.mark.slow
def test_tokens_function_ablation_and_errors():
    model = hand_vit(columns=True)
    x = images((16, 24), seed=9)
    # Attention and mean pooling ignore token order, so the same weights stored row by row
    # give the same logits: Ablation-CAM through the function equals it through a TokenGrid.
    rows = hand_vit()
    rows.set_weights(model.get_weights())
    ablation = AblationCAM(max_channels=8)
    by_grid = keras_cam.explain(rows, x, method=ablation, tokens=TokenGrid(4, 6))
    by_function = keras_cam.explain(model, x, method=ablation, tokens=columns_first)
    np.testing.assert_allclose(by_function.raw, by_grid.raw, rtol=1e-3, atol=1e-5)
    assert by_grid.raw.max() > 0

    with pytest.raises(ValueError, match="by selecting and rearranging entries only"):
        keras_cam.CAMExplainer(model, layer="block1_out", tokens=lambda t: columns_first(2 * t))
    with pytest.raises(
        ValueError, match=r"tokens=.* failed on a layer output of shape \(1, 24, 8\)"
    ):
        keras_cam.CAMExplainer(
            model, layer="block1_out", tokens=lambda t: ops.reshape(t, (-1, 5, 5, 8))
        )


@pytest.mark.slow
def test_token_grid_override_and_errors():
    model = hand_vit(size=(16, 24), patch=4)
    x = images((16, 24))
    forced = keras_cam.explain(model, x, tokens=TokenGrid(4, 6), targets=CLASSES)
    assert forced.raw.shape == (3, 4, 6)
    with pytest.raises(ValueError, match="describes 25 tokens but layer 'block1_out' outputs 24"):
        keras_cam.explain(model, x, layer="block1_out", tokens=TokenGrid(4, 6, prefix=1))
    with pytest.raises(ValueError, match=r"describes 25 tokens but the token layers .* output"):
        keras_cam.CAMExplainer(model, tokens=TokenGrid(5, 5))
    with pytest.raises(ValueError, match=r"tokens must be None, a keras_cam\.TokenGrid"):
        keras_cam.CAMExplainer(model, tokens=(4, 6))
    with pytest.raises(ValueError, match=r"No layer 'block9_out'.*Token layers you can pass"):
        keras_cam.explain(model, x, layer="block9_out")
    # A class-token head: the last block's output gives an empty map (hence the default,
    # found also behind a softmax, whose outputs always sum to 1).
    class_token_model = hand_vit(class_token=True, activation="softmax")
    empty = keras_cam.explain(class_token_model, x, layer="block1_out", targets=CLASSES)
    assert np.all(empty.raw == 0)
    assert keras_cam.CAMExplainer(class_token_model).layer == "block1_norm1"


# The methods whose raw map is at the input's resolution, not the explained layer's.
INPUT_RESOLUTION = ("fullgrad", "guidedbackprop", "guidedgradcam", "refinecam")


@pytest.mark.slow
def test_every_method_on_a_token_map():
    model = vit_classifier(pooling="gap")
    x = images((32, 48), seed=7)
    skipped = ("cam", "scorecam", "sscam", "iscam", "sess")  # SESS: square images only
    methods = [m for m in keras_cam.available_methods() if m not in skipped]
    methods += [ScoreCAM(max_channels=4), AblationCAM(max_channels=4)]
    methods += [SSCAM(samples=2, max_channels=4), ISCAM(samples=2, max_channels=4)]
    methods.remove("ablationcam")
    with_class_0_along_the_mean_token(model, x)
    results = keras_cam.explain(model, x, method=methods, targets=[0, 0, 0])
    assert set(INPUT_RESOLUTION) <= set(results)
    for name, result in results.items():
        # The input-gradient methods map the pixels: their raw map is the input's size.
        expected = (3, 32, 48) if name in INPUT_RESOLUTION else (3, 4, 6)
        assert result.raw.shape == expected, name
        assert np.isfinite(result.heatmaps).all(), name
        assert result.heatmaps.max() > 0, name
    with pytest.raises(ValueError, match="method='cam' needs a head of GlobalAveragePooling2D"):
        keras_cam.explain(model, x, method="cam")


@pytest.mark.slow
def test_callback_in_fit_on_dinov2_with_a_dict_input(tmp_path):
    model = dinov2_with_head()[0]
    x = images((42, 42), count=8, seed=8)
    y = np.arange(8) % 3
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    callback = keras_cam.CAMCallback(
        (x[:4], y[:4]), tmp_path, view=keras_cam.ViewOptions(max_images=4, images="overlays")
    )
    model.fit({"images": x}, y, epochs=2, batch_size=4, verbose=0, callbacks=[callback])
    assert callback.explainer.trace_count == 1
    events = read_events(str(tmp_path))
    assert sorted(events["cam/gradcam"]) == [0, 1]
    overlays = events["cam/gradcam"][1]
    assert len(overlays) == 4
    assert overlays[0].shape == (42, 42, 3)
