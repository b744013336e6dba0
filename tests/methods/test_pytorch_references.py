"""The added methods against the reference libraries, on weights copied from a torch CNN.

pytorch-grad-cam 1.5.7 (`grad-cam`) and TorchCAM 0.5.0 (`torchcam`) are test-only
dependencies (`make test` installs them; skipped where they are missing). The same
small CNN is built in torch and in Keras, the torch weights are copied over, the logits
must agree to 1e-4, and each map must equal the reference's per image (Pearson r ≥ 0.999
and the min-max normalised maps within 1e-3). The target layer keeps the input's
resolution, so the references' upsampling is the identity.

pytorch-grad-cam imports torchvision (`transforms` and `ops.box_iou`, used by none of the
methods compared here); where no torchvision matching the installed torch exists (the
CPU build here has none), a stub module stands in for it.
"""

import sys
import types

import keras
import numpy as np
import pytest
from keras import layers

import keras_cam

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # copies weights and runs the references: TensorFlow only in CI


def _stub_torchvision() -> None:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        stub = types.ModuleType("torchvision")
        stub.transforms = types.ModuleType("torchvision.transforms")
        stub.transforms.functional = types.ModuleType("torchvision.transforms.functional")
        stub.ops = types.ModuleType("torchvision.ops")
        for name in ("Compose", "Normalize", "ToTensor"):
            setattr(stub.transforms, name, None)
        stub.transforms.functional.resize = None
        sys.modules.update(
            {
                "torchvision": stub,
                "torchvision.transforms": stub.transforms,
                "torchvision.transforms.functional": stub.transforms.functional,
                "torchvision.ops": stub.ops,
            }
        )


_stub_torchvision()
pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

SIZE = 8
CLASSES = [0, 2, 1, 2]


def keras_net() -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="target")(x)
    x = layers.Conv2D(4, 1, activation="relu", name="mix")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(3, name="out")(x))


class HookedNet(torch.nn.Module):
    """TorchNet with its target ReLU as a module (pytorch-grad-cam hooks modules)."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.target = torch.nn.Sequential(torch.nn.Conv2d(6, 8, 3, padding=1), torch.nn.ReLU())
        self.mix = torch.nn.Conv2d(8, 4, 1)
        self.out = torch.nn.Linear(4, 3)

    def forward(self, x):
        x = self.target(torch.relu(self.conv1(x)))
        return self.out(torch.relu(self.mix(x)).mean(dim=(2, 3)))


def _copy_weights(net: HookedNet, model: keras.Model) -> None:
    def conv(module):
        kernel = module.weight.detach().numpy().transpose(2, 3, 1, 0)
        return [kernel, module.bias.detach().numpy()]

    model.get_layer("conv1").set_weights(conv(net.conv1))
    model.get_layer("target").set_weights(conv(net.target[0]))
    model.get_layer("mix").set_weights(conv(net.mix))
    model.get_layer("out").set_weights(
        [net.out.weight.detach().numpy().T, net.out.bias.detach().numpy()]
    )


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    net = HookedNet().eval()
    with torch.no_grad():  # a positive bias keeps the head's ReLUs and scores alive
        net.mix.bias.add_(0.2)
    model = keras_net()
    _copy_weights(net, model)
    x = np.random.default_rng(1).uniform(0, 1, size=(len(CLASSES), SIZE, SIZE, 3))
    x = x.astype("float32")
    torch_x = torch.tensor(x.transpose(0, 3, 1, 2))
    with torch.no_grad():
        torch_logits = net(torch_x).numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), torch_logits, atol=1e-4)
    return net, model, x, torch_x


def _min_max(maps):
    """Exact min-max scaling (the references add 1e-7 to the range, which matters for tiny
    maps; re-scaling their output removes it)."""
    maps = maps - maps.min(axis=(1, 2), keepdims=True)
    return maps / maps.max(axis=(1, 2), keepdims=True)


def _reference_signed(method, net, torch_x):
    """The reference's map before its ReLU (its `get_cam_image`), from its own hooks."""
    cam = method(model=net, target_layers=[net.target])
    targets = [ClassifierOutputTarget(c) for c in CLASSES]
    normalised = cam(input_tensor=torch_x, targets=targets)
    activations = cam.activations_and_grads.activations[0].detach().numpy()
    gradients = cam.activations_and_grads.gradients
    gradients = gradients[0].detach().numpy() if gradients else None
    signed = cam.get_cam_image(torch_x, net.target, targets, activations, gradients, False)
    return normalised, np.asarray(signed, np.float64)


def _assert_equal_per_image(ours, theirs):
    for mine, reference in zip(ours, theirs, strict=True):
        assert reference.max() > 0, "an all-zero reference map compares nothing"
        r = np.corrcoef(mine.ravel(), reference.ravel())[0, 1]
        assert r >= 0.999, r
    np.testing.assert_allclose(_min_max(ours), _min_max(theirs), atol=1e-3)


# name -> (pytorch-grad-cam class, whether the reference's sign is arbitrary (an SVD's))
PGC_METHODS = {
    "fem": ("FEM", False),
    "gradcamelementwise": ("GradCAMElementWise", False),
    "eigengradcam": ("EigenGradCAM", True),
    "kpcacam": ("KPCA_CAM", False),  # both signed like scikit-learn's svd_flip
}


@pytest.mark.parametrize("name", sorted(PGC_METHODS))
def test_equals_pytorch_grad_cam(nets, name):
    net, model, x, torch_x = nets
    class_name, sign_is_arbitrary = PGC_METHODS[name]
    normalised, signed = _reference_signed(getattr(pgc, class_name), net, torch_x)
    ours = keras_cam.explain(model, x, method=name, layer="target", targets=CLASSES).raw
    if sign_is_arbitrary:
        # Ours is signed to agree with Σ_c of the method's weighted activations; the
        # reference keeps whichever sign the SVD returned, image by image.
        flip = np.array(
            [np.corrcoef(o.ravel(), s.ravel())[0, 1] < 0 for o, s in zip(ours, signed, strict=True)]
        )
        signed = np.where(flip[:, None, None], -signed, signed)
    else:
        # Without a sign to choose, the reference's own output is compared too.
        _assert_equal_per_image(ours, normalised)
    _assert_equal_per_image(ours, np.maximum(signed, 0))


def test_sobelcam_equals_pytorch_grad_cams_sobel_cam(nets):
    """Its `sobel_cam` takes an RGB uint8 image, rounds the grey image to uint8 and each
    |∂| too (cv2.convertScaleAbs), clipping at 255. On grey pixels (R = G = B: the grey
    is exact) of 0..60 nothing clips (|∂| ≤ 4·60), and the maps are equal up to the final
    rounding. (On full-range noise the clipping bites, r ≈ 0.98; ours does not clip.)"""

    from pytorch_grad_cam.sobel_cam import sobel_cam

    _, model, x, _ = nets
    pixels = np.repeat(np.round(x[..., :1] * 60), 3, axis=-1).astype(np.uint8)
    ours = keras_cam.explain(
        model, pixels.astype("float32"), method="sobelcam", layer="target", targets=CLASSES
    ).raw
    theirs = np.stack([sobel_cam(image) for image in pixels]).astype(np.float64)
    for mine, reference in zip(ours, theirs, strict=True):
        assert np.corrcoef(mine.ravel(), reference.ravel())[0, 1] >= 0.999
    np.testing.assert_allclose(ours, theirs, atol=1.0)  # uint8 rounding, twice


class _FixedNoise:
    """Stands in for TorchCAM's `torch.distributions.Normal`: hands out our noise fields,
    one per sample, broadcast over images and channels (as SS-CAM shares them)."""

    def __init__(self, fields):
        self.fields = iter(torch.tensor(np.asarray(fields, np.float32)))

    def sample(self, size):
        return next(self.fields).expand(size).clone()


def _torchcam_maps(extractor, net, torch_x):
    out = net(torch_x)
    maps = extractor(class_idx=CLASSES, scores=out)[0].detach().numpy()
    extractor.remove_hooks()
    return np.asarray(maps, np.float64)


def test_sscam_equals_torchcam_with_the_same_noise(nets):
    """TorchCAM draws fresh noise per image and channel; fed our shared fields instead
    (the same N(0, σ²) per pixel), its SS-CAM equals ours."""
    from torchcam.methods import SSCAM as TorchSSCAM

    from keras_cam.methods import SSCAM

    net, model, x, torch_x = nets
    ours = SSCAM(samples=5, std=0.3, seed=3)
    extractor = TorchSSCAM(net, "target", num_samples=5, std=0.3, input_shape=(3, SIZE, SIZE))
    extractor._distrib = _FixedNoise(keras.ops.convert_to_numpy(ours.noise((SIZE, SIZE))))
    theirs = _torchcam_maps(extractor, net, torch_x)
    mine = keras_cam.explain(model, x, method=ours, layer="target", targets=CLASSES).raw
    _assert_equal_per_image(mine, theirs)


def test_iscam_equals_torchcam(nets):
    from torchcam.methods import ISCAM as TorchISCAM

    net, model, x, torch_x = nets
    extractor = TorchISCAM(net, "target", num_samples=10, input_shape=(3, SIZE, SIZE))
    theirs = _torchcam_maps(extractor, net, torch_x)
    mine = keras_cam.explain(model, x, method="iscam", layer="target", targets=CLASSES).raw
    _assert_equal_per_image(mine, theirs)


def test_smoothgradcampp_and_torchcams_differ_only_in_the_denominator(nets):
    """Without noise, TorchCAM's Smooth Grad-CAM++ is α = g²/(2g² + Σ_ab A·g³ + ε), one
    sum per channel; ours (Grad-CAM++'s, the paper's) is g²/(2g² + Σ_ab A · g³_ij). Each
    equals its formula on the torch activations and gradients; both are shown."""
    from torchcam.methods import SmoothGradCAMpp

    net, model, x, torch_x = nets
    extractor = SmoothGradCAMpp(net, "target", num_samples=1, input_shape=(3, SIZE, SIZE))
    extractor._distrib = _FixedNoise(np.zeros((1, 1, 1, 1)))  # torch's Normal rejects σ = 0
    theirs = _torchcam_maps(extractor, net, torch_x)
    method = keras_cam.methods.SmoothGradCAMPlusPlus(samples=1, std=0.0)
    mine = keras_cam.explain(model, x, method=method, layer="target", targets=CLASSES).raw

    torch_x = torch_x.clone().requires_grad_(True)
    a = torch.relu(net.target[0](torch.relu(net.conv1(torch_x))))
    score = net.out(torch.relu(net.mix(a)).mean(dim=(2, 3)))[range(len(CLASSES)), CLASSES]
    (g,) = torch.autograd.grad(score.sum(), a)
    a, g = (t.detach().numpy().astype(np.float64) for t in (a, g))
    sums = a.sum(axis=(2, 3), keepdims=True)
    paper = (g**2 / np.where(g != 0, 2 * g**2 + sums * g**3, 1) * np.maximum(g, 0)).sum((2, 3))
    per_channel = (g**3 * a).sum(axis=(2, 3), keepdims=True)
    torchcam = (g**2 / (2 * g**2 + per_channel + 1e-8) * np.maximum(g, 0)).sum((2, 3))
    _assert_equal_per_image(mine, np.maximum((paper[..., None, None] * a).sum(1), 0))
    _assert_equal_per_image(theirs, np.maximum((torchcam[..., None, None] * a).sum(1), 0))


def _assert_equal_where_shown(ours, theirs):
    """An image whose contrast falls everywhere has an all-zero map in both; the others
    are compared."""
    shown = theirs.max(axis=(1, 2)) > 0
    assert shown.any()
    np.testing.assert_array_equal(ours[~shown], 0)
    _assert_equal_per_image(ours[shown], theirs[shown])


def test_finercam_equals_pytorch_grad_cam(nets):
    """pytorch-grad-cam's FinerCAM on its default targets: the predicted class against the
    two (of three) classes closest to it, softmax-weighted, α = 1."""
    net, model, x, torch_x = nets
    cam = pgc.FinerCAM(model=net, target_layers=[net.target])
    cam(input_tensor=torch_x)
    hooks = cam.base_cam.activations_and_grads
    activations, gradients = (t[0].detach().numpy() for t in (hooks.activations, hooks.gradients))
    signed = cam.base_cam.get_cam_image(torch_x, net.target, None, activations, gradients, False)
    theirs = np.maximum(np.asarray(signed, np.float64), 0)
    ours = keras_cam.explain(model, x, method="finercam", layer="target").raw
    _assert_equal_where_shown(ours, theirs)


def test_finercam_mean_weighting_equals_torchcam(nets):
    """TorchCAM's FinerCAM is y_m - γ · mean of the compared logits (γ = 0.6): our
    `weighting="mean"` with `alpha=γ`."""
    from torchcam.methods import FinerCAM as TorchFinerCAM
    from torchcam.methods import GradCAM as TorchGradCAM

    net, model, x, torch_x = nets
    extractor = TorchFinerCAM(
        net, "target", input_shape=(3, SIZE, SIZE), base_method=TorchGradCAM, gamma=0.6
    )
    theirs = _torchcam_maps(extractor, net, torch_x)
    method = keras_cam.methods.FinerCAM(alpha=0.6, weighting="mean")
    ours = keras_cam.explain(model, x, method=method, layer="target", targets=CLASSES).raw
    _assert_equal_where_shown(ours, theirs)


def _torchvision_resize(tensor, size):
    """torchvision's `resize(tensor, int)`: the shorter side to `size`, bilinear,
    anti-aliased (its default); SESS only enlarges, where that is plain bilinear."""
    height, width = tensor.shape[-2:]
    short = min(height, width)
    shape = (size * height // short, size * width // short)
    return torch.nn.functional.interpolate(
        tensor, size=shape, mode="bilinear", align_corners=False, antialias=True
    )


@pytest.mark.parametrize(
    "options",
    [
        {},  # the paper's: 12 scales, non-overlapping windows, mean fusion, blur
        {"num_scales": 4, "step_size": 3, "pre_filter_ratio": 0.3, "theta": 0.2},
        {"num_scales": 3, "pool": "max", "use_softmax_scores": False},
    ],
    ids=["defaults", "overlapping-prefiltered-threshold", "max-raw-scores"],
)
def test_sess_equals_pytorch_grad_cam(nets, monkeypatch, options):
    from pytorch_grad_cam import sess

    monkeypatch.setattr(sess, "resize", _torchvision_resize)  # torchvision is stubbed here
    net, model, x, torch_x = nets
    reference = sess.SESS(model=net, target_layers=[net.target], **options)
    theirs = reference(torch_x, [ClassifierOutputTarget(c) for c in CLASSES])
    ours_options = dict(options)
    ours_options["softmax_scores"] = ours_options.pop("use_softmax_scores", True)
    method = keras_cam.methods.SESS(**ours_options)
    ours = keras_cam.explain(model, x, method=method, layer="target", targets=CLASSES).heatmaps
    _assert_equal_per_image(ours, theirs)
