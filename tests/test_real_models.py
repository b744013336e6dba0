"""Real architectures: every keras.applications and KerasHub CNN classifier, checked end to end.

Random weights (no download), the smallest input at which the backbone's last
stage is still at least 2x2, and each model built once per module (a
module-scoped fixture). The full matrix runs under TensorFlow (slow marker); a
representative subset (MobileNetV3Small, ConvNeXtTiny, a KerasHub ResNet) on
every backend. For each model:

- `layer=None` picks a layer of the last stage: its spatial size is that of
  the backbone's own feature output (`include_top=False`, or the KerasHub
  backbone's output), i.e. its stride is the backbone's final stride;
- Grad-CAM agrees (correlation >= 0.999 per image) with a Grad-CAM computed
  here from the backend's own autodiff on sub-models cut at that layer;
- every method gives finite maps in [0, 1], and `CAMCallback` runs in a
  one-epoch `fit`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import pytest
from conftest import feature_map_methods, gradient, to_numpy
from keras import layers

import keras_cam
from keras_cam.methods import ISCAM, SESS, SSCAM, AblationCAM, ScoreCAM

keras_hub = pytest.importorskip("keras_hub")

A = keras.applications
# Run on every backend; the rest of the matrix (and these in full) in the TensorFlow pass.
SUBSET = ("hub:ResNet",)
CLASSES = 3


def application(constructor: Callable[..., keras.Model], size: int) -> Callable[..., keras.Model]:
    def build(include_top: bool) -> keras.Model:
        if include_top:
            return constructor(
                weights=None,
                input_shape=(size, size, 3),
                classes=CLASSES,
                classifier_activation=None,
            )
        return constructor(include_top=False, weights=None, input_shape=(size, size, 3))

    return build


# The smallest input at which the last stage is 2x2 or more: 64 px for a final
# stride of 32, Xception's legal minimum of 71, 107 for InceptionResNetV2's
# valid-padded stem, and InceptionV3 at its documented 139.
APPLICATIONS = {
    "MobileNet": (A.MobileNet, 64),
    "MobileNetV2": (A.MobileNetV2, 64),
    "MobileNetV3Small": (A.MobileNetV3Small, 64),
    "MobileNetV3Large": (A.MobileNetV3Large, 64),
    "EfficientNetB0": (A.EfficientNetB0, 64),
    "EfficientNetV2B0": (A.EfficientNetV2B0, 64),
    "DenseNet121": (A.DenseNet121, 64),
    "ResNet50": (A.ResNet50, 64),
    "ResNet50V2": (A.ResNet50V2, 64),
    "Xception": (A.Xception, 71),
    "InceptionV3": (A.InceptionV3, 139),
    "InceptionResNetV2": (A.InceptionResNetV2, 107),
    "VGG16": (A.VGG16, 64),
    "ConvNeXtTiny": (A.ConvNeXtTiny, 64),
    "NASNetMobile": (A.NASNetMobile, 64),
}


def hub_classifiers() -> dict[str, tuple[Callable[[], keras.Model], int]]:
    """KerasHub image classifiers from small constructor configs (no preset, no download)."""
    models = keras_hub.models

    def resnet():
        backbone = models.ResNetBackbone(
            input_conv_filters=[64],
            input_conv_kernel_sizes=[3],
            stackwise_num_filters=[64, 16],
            stackwise_num_blocks=[1, 1],
            stackwise_num_strides=[1, 2],
            block_type="basic_block",
            image_shape=(32, 32, 3),
        )
        return models.ResNetImageClassifier(backbone, num_classes=CLASSES)

    def densenet():
        backbone = models.DenseNetBackbone(
            stackwise_num_repeats=[1, 1], growth_rate=4, image_shape=(32, 32, 3)
        )
        return models.DenseNetImageClassifier(backbone, num_classes=CLASSES)

    def vgg():
        # Two stages (stride 4) on 28 px: 7x7 features, which the conv head's 7x7
        # `fc1` turns into 1x1, as on a full VGG at 224 px.
        backbone = models.VGGBackbone(
            stackwise_num_repeats=[1, 1], stackwise_num_filters=[4, 8], image_shape=(28, 28, 3)
        )
        return models.VGGImageClassifier(backbone, num_classes=CLASSES, pooling_hidden_dim=8)

    def mobilenet():
        backbone = models.MobileNetBackbone(
            stackwise_expansion=[[16], [24]],
            stackwise_num_blocks=[1, 1],
            stackwise_num_filters=[[8], [16]],
            stackwise_kernel_size=[[3], [3]],
            stackwise_num_strides=[[2], [2]],
            stackwise_se_ratio=[[None], [0.25]],
            stackwise_activation=[["relu"], ["hard_swish"]],
            stackwise_padding=[[1], [1]],
            output_num_filters=32,
            depthwise_filters=8,
            depthwise_stride=2,
            depthwise_residual=False,
            last_layer_filter=32,
            squeeze_and_excite=0.5,
            input_num_filters=8,
            image_shape=(32, 32, 3),
        )
        return models.MobileNetImageClassifier(backbone, num_classes=CLASSES)

    def efficientnet():
        backbone = models.EfficientNetBackbone(
            stackwise_kernel_sizes=[3, 3],
            stackwise_num_repeats=[1, 1],
            stackwise_input_filters=[8, 8],
            stackwise_output_filters=[8, 16],
            stackwise_expansion_ratios=[1, 4],
            stackwise_squeeze_and_excite_ratios=[0.0, 0.25],
            stackwise_strides=[1, 2],
            stackwise_block_types=["fused", "unfused"],
            width_coefficient=1.0,
            depth_coefficient=1.0,
            num_features=32,
            input_shape=(32, 32, 3),
        )
        return models.EfficientNetImageClassifier(backbone, num_classes=CLASSES)

    def cspnet():
        backbone = models.CSPNetBackbone(
            stem_filters=8,
            stem_kernel_size=3,
            stem_strides=1,
            stackwise_depth=[1, 1],
            stackwise_strides=[1, 2],
            stackwise_num_filters=[8, 16],
            block_type="dark_block",
            stage_type="dark",
            image_shape=(32, 32, 3),
        )
        return models.CSPNetImageClassifier(backbone, num_classes=CLASSES)

    return {
        "hub:ResNet": (resnet, 32),
        "hub:DenseNet": (densenet, 32),
        "hub:VGG": (vgg, 28),
        "hub:MobileNet": (mobilenet, 32),
        "hub:EfficientNet": (efficientnet, 32),
        "hub:CSPNet": (cspnet, 32),
    }


HUB = hub_classifiers()


@dataclass
class Built:
    """One architecture: its models to explain and the size of its backbone's last feature map.

    `models` maps a label (`"flat"`: the classifier as built; `"nested"`: its
    `include_top=False` base, frozen, in `Sequential([base, GAP, Dense])`) to the model.
    """

    name: str
    models: dict[str, keras.Model]
    size: int
    final_map: tuple[int, int]


def build(case: str) -> Built:
    if case.startswith("hub:"):
        make, size = HUB[case]
        model = make()
        return Built(case, {"flat": model}, size, tuple(model.backbone.output.shape[1:3]))
    constructor, size = APPLICATIONS[case]
    base = application(constructor, size)(include_top=False)
    base.trainable = False
    nested = keras.Sequential(
        [keras.Input((size, size, 3)), base, layers.GlobalAveragePooling2D(), layers.Dense(3)]
    )
    flat = application(constructor, size)(include_top=True)
    # The base's own feature output is the oracle for the last stage of both.
    return Built(case, {"flat": flat, "nested": nested}, size, tuple(base.output.shape[1:3]))


def cases() -> list:
    return [
        pytest.param(name, marks=() if name in SUBSET else pytest.mark.slow, id=name)
        for name in [*APPLICATIONS, *HUB]
    ]


@pytest.fixture(scope="module", params=cases())
def built(request) -> Built:
    keras.utils.set_random_seed(0)
    return build(request.param)


def images(built: Built, count: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    # In [-1, 1], as keras.applications preprocessing gives: 0-255 saturates ReLU6 backbones.
    return rng.uniform(-1, 1, size=(count, built.size, built.size, 3)).astype("float32")


def operation(model: keras.Model, name: str):
    members = getattr(model, "operations", model.layers)
    return next(op for op in members if op.name == name)


def sub_models(model: keras.Model, path: str) -> tuple[Callable, Callable]:
    """(input -> activations, activations -> logits) at `path`, by Keras' functional API."""
    names = path.split("/")
    if len(names) == 1:
        tensor = operation(model, names[0]).output
        return keras.Model(model.inputs, tensor), keras.Model(tensor, model.outputs[0])
    outer = operation(model, names[0])
    tensor = operation(outer, names[1]).output
    # The base's last layer is often the target: then nothing of the base is left after it.
    inner_head = (lambda a: a) if tensor is outer.output else keras.Model(tensor, outer.output)
    if isinstance(model, keras.Sequential):
        after = model.layers[model.layers.index(outer) + 1 :]
    else:
        # A KerasHub task: the rest of its graph after the backbone.
        after = [keras.Model(outer._inbound_nodes[-1].output_tensors[0], model.outputs[0])]

    def head(activations):
        x = inner_head(activations)
        for layer in after:
            x = layer(x)
        return x

    return keras.Model(outer.input, tensor), head


def tape_gradcam(model: keras.Model, path: str, x: np.ndarray, classes: np.ndarray) -> np.ndarray:
    features, head = sub_models(model, path)
    activations = to_numpy(features(x, training=False))

    def score(a):
        logits = head(a)
        return keras.ops.take_along_axis(logits, keras.ops.convert_to_tensor(classes[:, None]), 1)

    grads = gradient(score, activations)
    weights = grads.mean(axis=(1, 2), keepdims=True)
    return np.maximum((weights * activations).sum(axis=-1), 0.0)


def test_the_automatic_layer_is_in_the_last_stage_and_at_least_2x2(built):
    for variant, model in built.models.items():
        explainer = keras_cam.CAMExplainer(model)
        map_size = tuple(explainer.resolved.layer.output.shape[1:3])
        assert map_size == built.final_map, (variant, explainer.layer, map_size)
        assert min(map_size) >= 2
        if built.name.startswith("hub:"):
            assert explainer.layer.startswith(f"{model.backbone.name}/")


# The fits that cost 25 s or more each on 2 cores: `make test` checks their automatic layer
# (above) and leaves their one-epoch fit with every method to `make matrix`, keeping CI short.
FULL_MATRIX_ONLY = {
    "NASNetMobile",
    "InceptionResNetV2",
    "DenseNet121",
    "EfficientNetB0",
    "EfficientNetV2B0",
    "InceptionV3",
    "ResNet50",
    "ResNet50V2",
    "MobileNetV2",
    "MobileNetV3Large",
    "Xception",
}


# CAM is defined only for a GAP -> Dense head (the nested models'); the others run on any head.
METHODS = [
    *[
        m
        for m in feature_map_methods()
        if m not in ("cam", "scorecam", "ablationcam", "sscam", "iscam", "sess")
    ],
    SESS(num_scales=2),
    ScoreCAM(max_channels=4),
    AblationCAM(max_channels=4),
    SSCAM(samples=2, max_channels=4),
    ISCAM(samples=2, max_channels=4),
]


# Their flat fit runs in `make test` (LayerNorm/GELU, hard-swish and squeeze-excite blocks
# under every method); the nested one (30–90 s) adds only the path into a nested model,
# which the lighter models' nested fits cover.
NESTED_IN_FULL_MATRIX_ONLY = {"ConvNeXtTiny", "MobileNetV3Small"}


@pytest.mark.parametrize("variant", ["flat", "nested"])
def test_a_one_epoch_fit_explains_with_every_method_and_gradcam_agrees_with_autodiff(
    built, variant, tmp_path
):
    if variant not in built.models:
        pytest.skip("a KerasHub classifier is already a backbone nested in a task")
    heaviest = built.name in FULL_MATRIX_ONLY or (
        variant == "nested" and built.name in NESTED_IN_FULL_MATRIX_ONLY
    )
    if heaviest and not os.environ.get("KERAS_CAM_FULL_MATRIX"):
        pytest.skip("the heaviest fits run with `make matrix` (KERAS_CAM_FULL_MATRIX=1)")
    model, x = built.models[variant], images(built)
    methods = [*METHODS, "cam"] if variant == "nested" else METHODS
    model.compile(
        "sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False
    )
    callback = keras_cam.CAMCallback(
        x, tmp_path, method=methods, watch=keras_cam.WatchOptions(metrics=())
    )
    model.fit(x, np.arange(len(x)) % CLASSES, epochs=1, verbose=0, callbacks=[callback])
    assert list(tmp_path.glob("events.out.tfevents.*"))
    results = callback.explainer(x)  # the compiled function of the fit, with the trained weights
    assert callback.explainer.trace_count == 1
    for name, result in results.items():
        assert np.isfinite(result.heatmaps).all(), name
        assert result.heatmaps.min() >= 0, name
        assert result.heatmaps.max() <= 1, name

    gradcam = results["gradcam"]
    expected = tape_gradcam(model, gradcam.layer, x, gradcam.classes)
    assert gradcam.raw.shape == expected.shape
    shown = 0
    for got, want in zip(gradcam.raw, expected, strict=True):
        # No absolute floor: a random-init MobileNet's activations fade to ~1e-19.
        scale = float(want.max())
        if scale > 0 and np.ptp(want) > 1e-4 * scale:
            assert np.corrcoef(got.ravel(), want.ravel())[0, 1] >= 0.999
            shown += 1
        np.testing.assert_allclose(got, want, atol=1e-3 * scale, rtol=1e-3)
    assert shown > 0, "every map is constant: the comparison would show nothing"


@pytest.mark.slow
def test_convnext_is_explained_at_the_output_of_its_last_stage():
    """The cut is the `inputs + x` operation ending the last block, not a layer before the stage.

    At initialisation LayerScale is 1e-6, so every block is nearly the identity
    and a map from an earlier cut would look right: the scales are set to 1.
    """
    model = application(A.ConvNeXtTiny, 64)(include_top=True)
    for layer in model.layers:
        if layer.name.endswith("_layer_scale"):
            layer.set_weights([np.ones_like(w) for w in layer.get_weights()])
    explainer = keras_cam.CAMExplainer(model)
    cut = explainer.resolved.layer
    last_block = model.get_layer("convnext_tiny_stage_3_block_2_identity")
    (node,) = cut._inbound_nodes
    assert last_block.output in node.input_tensors  # inputs + x of the last block
    assert [layer.name for layer in explainer.resolved.head_layers] == [
        "convnext_tiny_head_gap",
        "convnext_tiny_head_layernorm",
        "convnext_tiny_head_dense",
    ]
    x = images(Built("ConvNeXtTiny", {}, 64, (2, 2)))
    result = explainer(x)
    expected = tape_gradcam(model, result.layer, x, result.classes)
    for got, want in zip(result.raw, expected, strict=True):
        assert np.corrcoef(got.ravel(), want.ravel())[0, 1] >= 0.999
    # Named explicitly, a last-stage block output is a cut point too.
    earlier = keras_cam.CAMExplainer(model, layer=operation_before(model, cut))
    assert earlier.layer != explainer.layer


def operation_before(model: keras.Model, cut) -> str:
    """The `inputs + x` of the block before the last one."""
    adds = [op.name for op in model.operations if type(op) is type(cut)]
    return adds[adds.index(cut.name) - 1]
