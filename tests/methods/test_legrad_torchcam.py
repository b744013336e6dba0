"""LeGrad against TorchCAM 0.5.0's `LeGrad` on a torchvision-style ViT with copied weights.

TorchCAM's `LeGrad` scores torchvision `VisionTransformer` blocks through
`model.encoder.ln` and `model.heads`. No torchvision matching the installed
CPU torch exists here (the only wheel is built for CUDA torch and fails to
load its operators), so `TorchViT` below mirrors torchvision 0.28's
`VisionTransformer` module for module (`conv_proj`, `class_token`,
`encoder.pos_embedding`, `encoder.layers[i].ln_1/self_attention/ln_2/mlp`,
`encoder.ln`, `heads.head`) and its forward pass line for line; the same
network is rebuilt in Keras and given the same weights. Rollout is compared
too, with vit-explain's formula applied to torch's own attention weights.
"""

from collections import OrderedDict

import keras
import numpy as np
import pytest
from keras import layers, ops

import keras_cam

torch = pytest.importorskip("torch")
torchcam_methods = pytest.importorskip("torchcam.methods")
pytestmark = pytest.mark.slow  # copies weights and runs the reference: TensorFlow only in CI

SIZE, PATCH, HIDDEN, HEADS, LAYERS, MLP, CLASSES_COUNT = 32, 8, 16, 2, 3, 32, 5
CLASSES = [0, 3, 4, 1]
nn = torch.nn


class EncoderBlock(nn.Module):
    """torchvision.models.vision_transformer.EncoderBlock."""

    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(HIDDEN, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(HIDDEN, HEADS, dropout=0.0, batch_first=True)
        self.dropout = nn.Dropout(0.0)
        self.ln_2 = nn.LayerNorm(HIDDEN, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(HIDDEN, MLP), nn.GELU(), nn.Dropout(0.0), nn.Linear(MLP, HIDDEN), nn.Dropout()
        )

    def forward(self, input):
        x = self.ln_1(input)
        x, _ = self.self_attention(x, x, x, need_weights=False)
        x = self.dropout(x)
        x = x + input
        y = self.ln_2(x)
        y = self.mlp(y)
        return x + y


class Encoder(nn.Module):
    """torchvision.models.vision_transformer.Encoder."""

    def __init__(self, tokens):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, tokens, HIDDEN).normal_(std=0.02))
        self.dropout = nn.Dropout(0.0)
        self.layers = nn.Sequential(
            OrderedDict((f"encoder_layer_{i}", EncoderBlock()) for i in range(LAYERS))
        )
        self.ln = nn.LayerNorm(HIDDEN, eps=1e-6)

    def forward(self, input):
        return self.ln(self.layers(self.dropout(input + self.pos_embedding)))


class TorchViT(nn.Module):
    """torchvision.models.VisionTransformer (class-token head, one Linear `heads.head`)."""

    def __init__(self):
        super().__init__()
        self.conv_proj = nn.Conv2d(3, HIDDEN, PATCH, stride=PATCH)
        self.class_token = nn.Parameter(torch.randn(1, 1, HIDDEN) * 0.5)
        self.encoder = Encoder((SIZE // PATCH) ** 2 + 1)
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(HIDDEN, CLASSES_COUNT)))

    def forward(self, x):
        n = x.shape[0]
        x = self.conv_proj(x).reshape(n, HIDDEN, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        return self.heads(self.encoder(x)[:, 0])


class Prepend(layers.Layer):
    def build(self, input_shape):
        self.token = self.add_weight(shape=(1, 1, HIDDEN), initializer="zeros")

    def call(self, x):
        return ops.concatenate([ops.tile(self.token, (ops.shape(x)[0], 1, 1)), x], axis=1)


class Position(layers.Layer):
    def build(self, input_shape):
        self.embedding = self.add_weight(shape=(1, *input_shape[1:]), initializer="zeros")

    def call(self, x):
        return x + self.embedding


def keras_vit() -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.Conv2D(HIDDEN, PATCH, strides=PATCH, name="conv_proj")(inputs)
    x = layers.Reshape((-1, HIDDEN))(x)
    x = Position(name="pos_embedding")(Prepend(name="class_token")(x))
    for i in range(LAYERS):
        h = layers.LayerNormalization(epsilon=1e-6, name=f"ln_1_{i}")(x)
        h = layers.MultiHeadAttention(HEADS, HIDDEN // HEADS, name=f"attention_{i}")(h, h)
        x = layers.Add()([x, h])
        h = layers.LayerNormalization(epsilon=1e-6, name=f"ln_2_{i}")(x)
        h = layers.Dense(MLP, activation="gelu", name=f"mlp_1_{i}")(h)
        x = layers.Add()([x, layers.Dense(HIDDEN, name=f"mlp_2_{i}")(h)])
    x = layers.LayerNormalization(epsilon=1e-6, name="ln")(x)
    x = layers.Lambda(lambda tokens: tokens[:, 0], name="class_token_out")(x)
    return keras.Model(inputs, layers.Dense(CLASSES_COUNT, name="head")(x), name="vit")


def copy_weights(source: TorchViT, target: keras.Model) -> None:
    def np_(t):
        return t.detach().numpy()

    target.get_layer("conv_proj").set_weights(
        [np_(source.conv_proj.weight).transpose(2, 3, 1, 0), np_(source.conv_proj.bias)]
    )
    target.get_layer("class_token").set_weights([np_(source.class_token)])
    target.get_layer("pos_embedding").set_weights([np_(source.encoder.pos_embedding)])
    per_head = HIDDEN // HEADS
    for i, block in enumerate(source.encoder.layers):
        attention = block.self_attention
        weight, bias = np_(attention.in_proj_weight), np_(attention.in_proj_bias)
        projections = []
        for part in range(3):
            rows = slice(part * HIDDEN, (part + 1) * HIDDEN)
            projections += [
                weight[rows].T.reshape(HIDDEN, HEADS, per_head),
                bias[rows].reshape(HEADS, per_head),
            ]
        out = np_(attention.out_proj.weight).T.reshape(HEADS, per_head, HIDDEN)
        target.get_layer(f"attention_{i}").set_weights(
            [*projections, out, np_(attention.out_proj.bias)]
        )
        for name, norm in ((f"ln_1_{i}", block.ln_1), (f"ln_2_{i}", block.ln_2)):
            target.get_layer(name).set_weights([np_(norm.weight), np_(norm.bias)])
        for name, linear in ((f"mlp_1_{i}", block.mlp[0]), (f"mlp_2_{i}", block.mlp[3])):
            target.get_layer(name).set_weights([np_(linear.weight).T, np_(linear.bias)])
    target.get_layer("ln").set_weights([np_(source.encoder.ln.weight), np_(source.encoder.ln.bias)])
    head = source.heads.head
    target.get_layer("head").set_weights([np_(head.weight).T, np_(head.bias)])


def pearson(a, b):
    return np.corrcoef(a.ravel(), b.ravel())[0, 1]


def unit(maps):
    low = maps.min(axis=(1, 2), keepdims=True)
    return (maps - low) / (maps.max(axis=(1, 2), keepdims=True) - low)


def test_legrad_and_rollout_equal_the_references_on_a_torchvision_vit():
    torch.manual_seed(0)
    keras.utils.set_random_seed(0)
    source = TorchViT().eval()
    model = keras_vit()
    copy_weights(source, model)
    x = np.random.default_rng(0).uniform(-1, 1, (len(CLASSES), SIZE, SIZE, 3)).astype("float32")
    x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        logits = source(x_torch).numpy()
    np.testing.assert_allclose(model.predict(x, verbose=0), logits, atol=1e-4)

    with torchcam_methods.LeGrad(source, list(source.encoder.layers)) as extractor:
        scores = source(x_torch)
        (reference,) = extractor(class_idx=CLASSES, scores=scores, normalized=False)
    reference = reference.detach().numpy()
    # The attention weights of every block, as torch computes them (vit-explain's input).
    attentions, tokens = [], None
    with torch.no_grad():
        n = len(x)
        tokens = source.conv_proj(x_torch).reshape(n, HIDDEN, -1).permute(0, 2, 1)
        tokens = torch.cat([source.class_token.expand(n, -1, -1), tokens], dim=1)
        tokens = tokens + source.encoder.pos_embedding
        for block in source.encoder.layers:
            h = block.ln_1(tokens)
            _, weights = block.self_attention(h, h, h, average_attn_weights=False)
            attentions.append(weights.numpy().astype(np.float64))
            tokens = block(tokens)
    flow = np.eye(attentions[0].shape[-1])[None]
    for attention in attentions:  # vit-explain, mean fusion, nothing discarded
        fused = attention.mean(axis=1) + np.eye(flow.shape[-1])
        flow = (fused / 2) @ flow
    rollout = flow[:, 0, 1:].reshape(n, SIZE // PATCH, SIZE // PATCH)

    results = keras_cam.explain(model, x, method=["legrad", "rollout"], targets=CLASSES, verbose=0)
    ours = results["legrad"].raw
    assert ours.shape == reference.shape == (len(CLASSES), 4, 4)
    for image in range(len(CLASSES)):
        assert pearson(ours[image], reference[image]) >= 0.999
    assert np.abs(unit(ours) - unit(reference)).max() < 1e-3
    np.testing.assert_allclose(ours, reference, rtol=1e-3, atol=1e-6 * reference.max())
    np.testing.assert_allclose(results["rollout"].raw, rollout, rtol=1e-4)
