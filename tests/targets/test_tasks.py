"""Task targets and output=: each explained score checked against the backend's own autodiff.

The autodiff checks of every target run on all three backends; the fits, the
KerasHub RetinaNet, the known-answer toy detector, output= and the error
messages (backend-neutral logic) only in the TensorFlow pass (`slow`).

For every target the test rebuilds the same scalar by hand (its own formula,
its own anchor decoding via `keras.utils.bounding_boxes`), differentiates it
with respect to the target layer's activations with GradientTape / jax.grad /
torch.autograd (`conftest.gradient`), forms Grad-CAM from those in numpy, and
compares with the explainer's raw map.
"""

import keras
import numpy as np
import pytest
from conftest import conv_classifier, gradient, tiny_retinanet, to_numpy
from keras import layers, ops

import keras_cam
from keras_cam.targets import tasks as T

SIZE = 16


def images(n=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, SIZE, SIZE, 3)).astype("float32")


def backbone():
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(5, 3, strides=2, padding="same", activation="relu", name="features")(x)
    return inputs, x


def segmenter(classes=3):
    inputs, x = backbone()
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv3")(x)
    return keras.Model(inputs, layers.Conv2D(classes, 1, activation="softmax", name="seg")(x))


def pooled(units, activation=None):
    inputs, x = backbone()
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(8, activation="tanh", name="hidden")(x)
    return keras.Model(inputs, layers.Dense(units, activation=activation, name="out")(x))


def split(model, layer="features"):
    """Activations of `layer` and the head as a function of them, rebuilt from the layers."""
    activations = to_numpy(keras.Model(model.input, model.get_layer(layer).output)(images()))
    after = [
        lay
        for lay in model.layers[model.layers.index(model.get_layer(layer)) + 1 :]
        if not isinstance(lay, keras.layers.InputLayer)
    ]

    def head(a, logits=True):
        for lay in after:
            if logits and lay is after[-1] and getattr(lay, "activation", None) is not None:
                saved, lay.activation = lay.activation, keras.activations.linear
                try:
                    a = lay(a)
                finally:
                    lay.activation = saved
            else:
                a = lay(a)
        return a

    return activations, head


def grad_cam(activations, gradients):
    weights = gradients.mean(axis=(1, 2), keepdims=True)
    return np.maximum((weights * activations).sum(-1), 0)


def assert_same_map(raw, expected, somewhere=True):
    """Correlation >= 0.999 per image; a map with nothing positive must stay zero."""
    assert raw.shape == expected.shape
    assert np.std(expected) > 0 or not somewhere
    for got, want in zip(raw, expected, strict=True):
        if np.std(want) > 0:
            assert np.corrcoef(got.ravel(), want.ravel())[0, 1] >= 0.999
        else:
            assert np.abs(got).max() <= 1e-6


def test_segmentation_of_the_predicted_pixels_matches_autodiff():
    model = segmenter()
    activations, head = split(model)
    labels = to_numpy(head(ops.convert_to_tensor(activations))).argmax(-1)
    c = int(np.bincount(labels.ravel()).argmax())  # a class every image predicts somewhere
    predicted = labels == c
    assert predicted.any(axis=(1, 2)).all()

    def score(a):
        return ops.sum(head(a)[..., c] * ops.convert_to_tensor(predicted, "float32"), axis=(1, 2))

    result = keras_cam.explain(model, images(), layer="features", targets=T.segmentation(c))
    assert_same_map(result.raw, grad_cam(activations, gradient(score, activations)))
    np.testing.assert_allclose(result.scores, to_numpy(score(activations)), rtol=1e-4)
    np.testing.assert_array_equal(result.predicted, labels)
    np.testing.assert_array_equal(result.classes, [c, c, c])


def test_segmentation_of_a_region_matches_autodiff_and_never_retraces():
    model = segmenter()
    activations, head = split(model)
    rng = np.random.default_rng(1)
    explainer = keras_cam.CAMExplainer(model, layer="features")
    for _ in range(3):
        region = rng.uniform(size=(3, SIZE // 2, SIZE // 2)) > 0.6

        def score(a, region=region):
            return ops.sum(head(a)[..., 2] * ops.convert_to_tensor(region, "float32"), (1, 2))

        # Given at display size: resampled (nearest) to the output's 8×8.
        display_region = region.repeat(2, axis=1).repeat(2, axis=2)
        result = explainer(images(), targets=T.segmentation(2, region=display_region))
        assert_same_map(result.raw, grad_cam(activations, gradient(score, activations)))
    assert explainer.trace_count == 1


def test_regression_output_matches_autodiff_in_both_directions():
    model = pooled(2)
    activations, head = split(model)
    positive = 0
    for sign in (1, -1):
        result = keras_cam.explain(model, images(), layer="features", targets=T.output(1, sign))
        expected = grad_cam(activations, gradient(lambda a, s=sign: s * head(a)[:, 1], activations))
        # A pooled head's map may be negative everywhere in one direction.
        assert_same_map(result.raw, expected, somewhere=False)
        positive += np.count_nonzero(expected)
        np.testing.assert_allclose(result.predicted, to_numpy(head(activations))[:, 1], rtol=1e-5)
    assert positive > 0


def test_similarity_matches_autodiff_and_new_references_do_not_retrace():
    model = pooled(6)
    activations, head = split(model)
    explainer = keras_cam.CAMExplainer(model, layer="features")
    rng = np.random.default_rng(2)
    for reference in (rng.normal(size=6), rng.normal(size=(3, 6))):
        wanted = np.broadcast_to(reference, (3, 6)).astype("float32")

        def score(a, wanted=wanted):
            e = head(a)
            r = ops.convert_to_tensor(wanted)
            return ops.sum(e * r, 1) / (ops.norm(e, axis=1) * ops.norm(r, axis=1))

        result = explainer(images(), targets=T.similarity(reference))
        assert_same_map(result.raw, grad_cam(activations, gradient(score, activations)))
        np.testing.assert_allclose(result.scores, to_numpy(score(activations)), rtol=1e-4)
        assert np.all(np.abs(result.scores) <= 1)
    assert explainer.trace_count == 1


def test_positive_labels_of_a_multi_label_head_match_autodiff():
    model = pooled(4, "sigmoid")
    activations, head = split(model)
    probabilities = to_numpy(model(images()))
    result = keras_cam.explain(model, images(), layer="features", targets="positive")
    assert result.heatmaps.shape == (3, 4, SIZE, SIZE)
    np.testing.assert_array_equal(result.predicted, probabilities > 0.5)
    assert result.predicted.any()
    assert not result.predicted.all()
    for label in range(4):
        expected = grad_cam(activations, gradient(lambda a, k=label: head(a)[:, k], activations))
        for i in range(3):
            if result.predicted[i, label]:
                assert np.corrcoef(result.raw[i, label].ravel(), expected[i].ravel())[0, 1] > 0.999
            else:
                assert not result.heatmaps[i, label].any()
    single = keras_cam.explain(model, images(), layer="features", targets=2)
    np.testing.assert_allclose(single.scores, probabilities[:, 2], rtol=1e-5)


# --- detection ------------------------------------------------------------------

CELLS = SIZE // 2  # one anchor per cell of the 8×8 feature map, 2×2 pixels each


def grid_anchors():
    y, x = np.mgrid[0:CELLS, 0:CELLS].reshape(2, -1) * 2.0
    return np.stack([x, y, x + 2, y + 2], axis=1).astype("float32")


def toy_detector(classes=2, regress=True):
    """Per-cell class logits and box deltas: RetinaNet's raw dict, one anchor per cell."""
    inputs, x = backbone()
    class_conv = layers.Conv2D(classes, 1, name="class_conv")
    logits = layers.Reshape((-1, classes), name="cls_logits")(class_conv(x))
    deltas = layers.Conv2D(4, 1, kernel_initializer="zeros" if not regress else "glorot_uniform")
    boxes = layers.Reshape((-1, 4), name="bbox_regression")(
        layers.Lambda(lambda t: 0.1 * t)(deltas(x))
    )
    return keras.Model(inputs, {"bbox_regression": boxes, "cls_logits": logits})


def test_detection_matches_autodiff_with_an_independent_anchor_decoding():
    model = toy_detector()
    activations = to_numpy(keras.Model(model.input, model.get_layer("features").output)(images()))
    head = keras.Model(model.get_layer("features").output, model.output)
    box, variance = np.array([4.0, 4.0, 8.0, 8.0], "float32"), [1.0, 1.0, 0.5, 0.5]
    outputs = head(ops.convert_to_tensor(activations))
    decoded = to_numpy(
        keras.utils.bounding_boxes.decode_deltas_to_boxes(
            anchors=grid_anchors(),
            boxes_delta=outputs["bbox_regression"],
            anchor_format="xyxy",
            box_format="xyxy",
            encoded_format="center_xywh",
            variance=variance,
        )
    )
    low, high = np.maximum(decoded[..., :2], box[:2]), np.minimum(decoded[..., 2:], box[2:])
    overlap = np.prod(np.clip(high - low, 0, None), -1)
    union = np.prod(decoded[..., 2:] - decoded[..., :2], -1) + 16.0 - overlap
    matched = (overlap / union >= 0.2).astype("float32")
    assert matched.sum(1).min() > 0
    assert matched.sum(1).max() < 10

    def score(a):
        return ops.sum(head(a)["cls_logits"][..., 1] * ops.convert_to_tensor(matched), axis=1)

    target = T.detection(box, 1, grid_anchors(), iou=0.2, box_variance=variance)
    result = keras_cam.explain(model, images(), layer="features", targets=target)
    assert_same_map(result.raw, grad_cam(activations, gradient(score, activations)))
    np.testing.assert_allclose(result.scores, to_numpy(score(activations)), rtol=1e-4)
    assert result.predicted.shape == (3, 5)


@pytest.mark.slow
def test_toy_detector_explains_exactly_the_cells_of_the_box():
    """With no regression, the anchors that find a 2-by-2-cell box are its 4 cells.

    HiResCAM is gradient ⊙ activations summed over channels; the score is the
    sum of the 4 cells' logits of a 1×1 conv, so the map is the conv's
    channel-weighted activations on those cells and exactly zero elsewhere.
    """
    model = toy_detector(regress=False)
    box = np.array([4.0, 6.0, 8.0, 10.0])  # cells x 2..3, y 3..4
    target = T.detection(box, 0, grid_anchors(), iou=0.25)
    result = keras_cam.explain(model, images(), layer="features", targets=target, method="hirescam")
    activations = to_numpy(keras.Model(model.input, model.get_layer("features").output)(images()))
    kernel = to_numpy(model.get_layer("class_conv").kernel)[0, 0, :, 0]  # the class conv, class 0
    expected = np.zeros((3, CELLS, CELLS))
    expected[:, 3:5, 2:4] = np.maximum((activations[:, 3:5, 2:4] * kernel).sum(-1), 0)
    np.testing.assert_allclose(result.raw, expected, rtol=1e-4, atol=1e-6)
    masks = target.region_masks(3, (SIZE, SIZE))
    assert masks.sum() == 3 * 16
    assert masks[0, 6:10, 4:8].all()


# --- output= -------------------------------------------------------------------


def two_heads(as_dict):
    inputs, x = backbone()
    g = layers.GlobalAveragePooling2D()(x)
    cls = layers.Dense(3, activation="softmax", name="cls_head")(g)
    reg = layers.Dense(1, name="size_head")(g)
    return keras.Model(inputs, {"kind": cls, "size": reg} if as_dict else [cls, reg])


@pytest.mark.slow  # backend-neutral; the dict outputs also cross every backend in detection
@pytest.mark.parametrize("as_dict", [True, False])
def test_output_picks_one_output_of_a_multi_output_model(as_dict):
    model = two_heads(as_dict)
    outputs = model(images())
    kind, size = (outputs["kind"], outputs["size"]) if as_dict else outputs
    with pytest.raises(ValueError, match=r"has 2 outputs: .*('size'|size_head).*Pass output="):
        keras_cam.explain(model, images())
    for name in ("kind", "cls_head") if as_dict else (0, "cls_head"):
        result = keras_cam.CAMExplainer(model, output=name)(images())
        np.testing.assert_array_equal(result.predicted, to_numpy(kind).argmax(1))
        np.testing.assert_allclose(result.confidence, to_numpy(kind).max(1), rtol=1e-5)
    reg = keras_cam.CAMExplainer(model, output="size" if as_dict else 1)
    np.testing.assert_allclose(
        reg(images(), targets=T.output()).scores, to_numpy(size)[:, 0], rtol=1e-5
    )
    with pytest.raises(ValueError, match="output='age' is not an output"):
        keras_cam.CAMExplainer(model, output="age")(images())


@pytest.mark.slow
def test_task_targets_reject_bad_input_with_the_fix():
    with pytest.raises(ValueError, match="pick a segmentation output"):
        keras_cam.explain(pooled(3), images(), targets=T.segmentation(1))
    with pytest.raises(ValueError, match="scores 3 classes"):
        keras_cam.explain(segmenter(), images(), targets=T.segmentation(3))
    with pytest.raises(ValueError, match="reference has 4 values but the embedding has 6"):
        keras_cam.explain(pooled(6), images(), targets=T.similarity(np.ones(4)))
    with pytest.raises(ValueError, match="cannot explain output"):
        keras_cam.explain(conv_classifier(SIZE), images(), targets=T.output(), method="cam")
    with pytest.raises(
        ValueError, match=r"9 anchors were given but the outputs have shapes \(None, 64, 4\)"
    ):
        keras_cam.explain(
            toy_detector(), images(), targets=T.detection([0, 0, 2, 2], 0, grid_anchors()[:9])
        )
    with pytest.raises(ValueError, match="this output has one unit"):
        keras_cam.explain(pooled(1, "sigmoid"), images(), targets="positive")


# --- in a real fit ----------------------------------------------------------------


def fit_case(task):
    """(model, loss, x, y, target, probe labels, output=) for a short fit of each task."""
    x = images(12, seed=3)
    rng = np.random.default_rng(4)
    if task == "segmentation":
        y = (x[:, ::2, ::2, 0] > 0.5).astype("int32") + (x[:, ::2, ::2, 1] > 0.7)
        region = np.zeros((SIZE, SIZE), bool)
        region[4:12, 4:12] = True
        target = T.segmentation(1, region=region)
        return segmenter(), "sparse_categorical_crossentropy", x, y, target, y[:4], None
    if task == "regression":
        y = x.mean(axis=(1, 2))[:, :2]
        return pooled(2), "mse", x, y, T.output(1), y[:4], None
    if task == "similarity":
        y = rng.normal(size=(12, 6)).astype("float32")
        return pooled(6), "mse", x, y, T.similarity(y[:4]), None, None
    if task == "detection":
        model = toy_detector()
        y = {
            "bbox_regression": np.zeros((12, CELLS * CELLS, 4), "float32"),
            "cls_logits": rng.uniform(size=(12, CELLS * CELLS, 2)).astype("float32"),
        }
        target = T.detection([4.0, 4.0, 8.0, 8.0], 1, grid_anchors(), iou=0.2)
        return model, "mse", x, y, target, None, None
    if task == "multi_output":
        model = two_heads(as_dict=True)
        y = {"kind": rng.integers(0, 3, 12), "size": x.mean(axis=(1, 2, 3))}
        loss = {"kind": "sparse_categorical_crossentropy", "size": "mse"}
        return model, loss, x, y, T.output(), y["size"][:4], "size"
    y = (x.mean(axis=(1, 2)) > 0.5).astype("float32")[:, :3]
    return pooled(3, "sigmoid"), "binary_crossentropy", x, y, "positive", None, None


@pytest.mark.slow
@pytest.mark.parametrize(
    "task",
    ["segmentation", "regression", "similarity", "detection", "multi_output", "multi_label"],
)
def test_task_targets_in_a_fit_with_the_callback(task, tmp_path):
    from conftest import read_events

    model, loss, x, y, target, labels, output = fit_case(task)
    model.compile("adam", loss)
    probe = (x[:4], labels) if labels is not None else x[:4]
    callback = keras_cam.CAMCallback(
        probe,
        tmp_path,
        targets=target,
        strict=True,
        explain=keras_cam.ExplainOptions(layer="features", output=output),
        view=keras_cam.ViewOptions(normalize="image", images=("grid", "overlays")),
    )
    model.fit(x, y, epochs=2, batch_size=6, verbose=0, callbacks=[callback])
    assert callback.explainer.trace_count == 1
    events = read_events(str(tmp_path))
    assert sorted(events["cam/gradcam/grid"]) == [0, 1]
    explainer = keras_cam.CAMExplainer(model, layer="features", output=output)
    final = explainer(x[:4], targets=target)
    heatmaps = final.heatmaps.max(axis=1) if target == "positive" else final.heatmaps
    np.testing.assert_array_equal(
        np.stack(events["cam/gradcam"][1]), keras_cam.overlay(x[:4], heatmaps)
    )
    assert events["cam/gradcam/mean_score"][1] == pytest.approx(
        float(np.mean(final.scores)), rel=1e-4
    )
    if task in ("segmentation", "detection"):
        masks = target.region_masks(4, (SIZE, SIZE))
        expected = keras_cam.diagnostics.metrics.energy_in_mask(final.heatmaps, masks)
        assert events["cam/gradcam/energy_in_mask"][1] == pytest.approx(expected, rel=1e-4)


@pytest.mark.slow
def test_detection_on_a_kerashub_retinanet():
    """The score is what KerasHub's own decoding says; new boxes do not retrace."""
    model = tiny_retinanet()
    x = np.random.default_rng(5).uniform(0, 1, (2, 64, 64, 3)).astype("float32")
    anchors = ops.concatenate(list(model.anchor_generator(x).values()))
    outputs = model(x)
    decoded = to_numpy(
        keras.utils.bounding_boxes.decode_deltas_to_boxes(
            anchors=anchors,
            boxes_delta=outputs["bbox_regression"],
            anchor_format="xyxy",
            box_format="xyxy",
            encoded_format="center_xywh",
            variance=model.label_encoder.box_variance,
        )
    )
    logits = to_numpy(outputs["cls_logits"])
    # The stack1 residual sum feeds both pyramid levels: every path to the heads crosses it.
    explainer = keras_cam.CAMExplainer(
        model, layer="retina_net_backbone/backbone/stack1_block0_add"
    )
    for anchor in (100, 500):
        box = decoded[0, anchor]  # a box the model predicts: at least that anchor matches
        low, high = np.maximum(decoded[..., :2], box[:2]), np.minimum(decoded[..., 2:], box[2:])
        overlap = np.prod(np.clip(high - low, 0, None), -1)
        area = np.prod(decoded[..., 2:] - decoded[..., :2], -1)
        matched = overlap / (area + np.prod(box[2:] - box[:2]) - overlap) >= 0.5
        target = T.detection(box, 1, anchors, box_variance=model.label_encoder.box_variance)
        result = explainer(x, targets=target)
        np.testing.assert_allclose(result.scores, (logits[..., 1] * matched).sum(1), rtol=1e-4)
        assert matched[0].any()
        assert result.raw.shape == (2, 8, 8)
        assert np.isfinite(result.raw).all()
        assert result.raw[0].max() > 0
    assert explainer.trace_count == 1


def test_marks_drawn_on_the_grid():
    from keras_cam.render.overlay import draw_box, draw_outline

    image = np.zeros((8, 8, 3), np.uint8)
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True  # at 8×8: rows and columns 2..5, all of it boundary but the middle
    outlined = draw_outline(image, mask)[..., 0] == 255
    expected = np.zeros((8, 8), bool)
    expected[2:6, 2:6] = True
    expected[3:5, 3:5] = False
    np.testing.assert_array_equal(outlined, expected)
    boxed = draw_box(image, (1, 2, 5, 7))[..., 0] == 255
    assert boxed[2, 1:5].all()
    assert boxed[6, 1:5].all()
    assert boxed[2:7, 1].all()
    assert boxed[2:7, 4].all()
    assert boxed.sum() == 2 * 4 + 2 * 3
    iou = T.mean_iou(np.array([[0, 1], [1, 1]]), np.array([[0, 1], [0, 1]]))
    assert iou == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_task_targets_return_their_marks_as_data_and_render_draws_them():
    from keras_cam.render.overlay import draw_marks

    image = np.zeros((8, 8, 3), np.uint8)
    overlaid = np.full((8, 8, 3), 100, np.uint8)
    prediction = np.zeros((4, 4), np.int64)
    prediction[1:3, 1:3] = 2  # the class's segment: pixels 2..5 at 8x8
    marks = T.segmentation(2).marks(0, prediction)
    np.testing.assert_array_equal(marks.outline, prediction == 2)
    assert marks.box is None
    drawn, same = draw_marks(image, overlaid, marks)
    assert same is overlaid
    ring = np.zeros((8, 8), bool)
    ring[2:6, 2:6], ring[3:5, 3:5] = True, False
    np.testing.assert_array_equal(drawn.any(axis=-1), ring)
    boxes = np.array([[1.0, 2.0, 5.0, 7.0], [0.0, 0.0, 3.0, 3.0]])
    marks = T.detection(boxes, 0, grid_anchors()).marks(1, None)
    assert (marks.outline, marks.box) == (None, (0.0, 0.0, 3.0, 3.0))
    same, boxed = draw_marks(image, overlaid, marks)
    assert same is image
    edge = np.zeros((8, 8), bool)
    edge[0:3, 0:3], edge[1:2, 1:2] = True, False
    np.testing.assert_array_equal(boxed[..., 0] == 255, edge)
    assert T.output().marks(0, 1.0) == T.Marks()
