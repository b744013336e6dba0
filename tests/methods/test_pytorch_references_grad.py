"""ShapleyCAM, FullGrad, guided backpropagation, Guided Grad-CAM and RefineCAM against
pytorch-grad-cam 1.5.7, on weights copied from a torch CNN.

The same style as `test_pytorch_references.py`: a small CNN built in torch and in Keras,
the torch weights copied over, the logits equal to 1e-4, each map equal to the
reference's per image (Pearson r ≥ 0.999, min-max normalised maps within 1e-3). This net
has what these methods read: `torch.nn.ReLU` modules (pytorch-grad-cam guides only
those), a BatchNorm2d with running statistics (FullGrad's implicit bias), biases on
every conv. Every layer keeps the input's resolution, so the references' upsampling is
the identity.
"""

import copy

import keras
import numpy as np
import pytest
from keras import layers
from test_pytorch_references import _assert_equal_per_image, _assert_equal_where_shown, pgc

import keras_cam
from keras_cam.methods import GuidedGradCAM, RefineCAM

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # copies weights and runs the references: TensorFlow only in CI

from pytorch_grad_cam.utils.model_targets import (  # noqa: E402
    ClassifierOutputReST,
    ClassifierOutputTarget,
)

SIZE = 8
SEED = 3  # every (image, class) below has a non-zero map with every method
CLASSES = [0, 2, 1, 2]


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(6)
        self.relu1 = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv2d(6, 8, 3, padding=1)
        self.relu2 = torch.nn.ReLU()
        self.mix = torch.nn.Conv2d(8, 4, 1)
        self.relu3 = torch.nn.ReLU()
        self.out = torch.nn.Linear(4, 3)

    def forward(self, x):
        x = self.relu2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.out(self.relu3(self.mix(x)).mean(dim=(2, 3)))


def keras_net() -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.Conv2D(6, 3, padding="same", name="conv1")(inputs)
    x = layers.BatchNormalization(epsilon=1e-5, name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="target")(x)
    x = layers.Conv2D(4, 1, activation="relu", name="mix")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(3, name="out")(x))


def _numpy(tensor):
    return tensor.detach().numpy()


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(SEED)
    net = Net().eval()
    with torch.no_grad():  # running statistics far from (0, 1): a real implicit bias
        net.bn1.running_mean.uniform_(-0.5, 0.5)
        net.bn1.running_var.uniform_(0.5, 2.0)
        net.bn1.weight.uniform_(0.5, 1.5)
        net.bn1.bias.uniform_(-0.3, 0.3)
        net.mix.bias.add_(0.2)  # keeps the head's ReLUs and scores alive
        # One hidden unit raises every class: no class has only negative weights, so no
        # guided gradient (which passes only positive signal) is all zero.
        net.out.weight[:, 0] = 0.5
    model = keras_net()

    def conv(module):
        return [_numpy(module.weight).transpose(2, 3, 1, 0), _numpy(module.bias)]

    model.get_layer("conv1").set_weights(conv(net.conv1))
    bn = net.bn1
    model.get_layer("bn1").set_weights(
        [_numpy(t) for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var)]
    )
    model.get_layer("target").set_weights(conv(net.conv2))
    model.get_layer("mix").set_weights(conv(net.mix))
    model.get_layer("out").set_weights([_numpy(net.out.weight).T, _numpy(net.out.bias)])
    x = np.random.default_rng(1).uniform(0, 1, size=(len(CLASSES), SIZE, SIZE, 3))
    x = x.astype("float32")
    torch_x = torch.tensor(x.transpose(0, 3, 1, 2))
    with torch.no_grad():
        torch_logits = net(torch_x).numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), torch_logits, atol=1e-4)
    return net, model, x, torch_x


def _ours(model, x, method, **options):
    return keras_cam.explain(model, x, method=method, targets=CLASSES, **options).raw


def test_shapleycam_equals_pytorch_grad_cam_with_rest_targets(nets):
    """Ours explains ReST by default; pytorch-grad-cam's ShapleyCAM is given its
    `ClassifierOutputReST` targets (with its default logit target, its map is Grad-CAM's
    on this piecewise-linear head, as ours with target="score")."""
    net, model, x, torch_x = nets
    cam = pgc.ShapleyCAM(model=net, target_layers=[net.relu2])
    theirs = cam(input_tensor=torch_x, targets=[ClassifierOutputReST(c) for c in CLASSES])
    _assert_equal_per_image(_ours(model, x, "shapleycam", layer="target"), theirs)


def test_fullgrad_equals_pytorch_grad_cam(nets):
    net, model, x, torch_x = nets
    cam = pgc.FullGrad(model=net, target_layers=[])
    theirs = cam(input_tensor=torch_x, targets=[ClassifierOutputTarget(c) for c in CLASSES])
    _assert_equal_per_image(_ours(model, x, "fullgrad"), theirs)


def _guided(net, torch_x):
    """pytorch-grad-cam's guided backpropagation, one image at a time (it takes one).

    On a copy: it puts back one `torch.nn.ReLU()` instance in place of all the net's
    ReLUs, so a hook on one of them would fire at every ReLU afterwards.
    """
    model = pgc.GuidedBackpropReLUModel(model=copy.deepcopy(net), device="cpu")
    found = [model(torch_x[i : i + 1].clone(), target_category=c) for i, c in enumerate(CLASSES)]
    return np.stack(found).astype(np.float64)  # (N, H, W, 3)


def test_guided_backprop_equals_pytorch_grad_cam(nets):
    net, model, x, torch_x = nets
    theirs = np.abs(_guided(net, torch_x)).max(axis=-1)
    _assert_equal_per_image(_ours(model, x, "guidedbackprop"), theirs)


def test_guided_gradcam_equals_pytorch_grad_cams_recipe(nets):
    """Its example script: the Grad-CAM map (normalised, resized) times the guided
    gradient; ours is the product's largest magnitude over the colour channels."""
    net, model, x, torch_x = nets
    grayscale = pgc.GradCAM(model=net, target_layers=[net.relu2])(
        input_tensor=torch_x, targets=[ClassifierOutputTarget(c) for c in CLASSES]
    )
    theirs = np.abs(grayscale[..., None] * _guided(net, torch_x)).max(axis=-1)
    ours = _ours(model, x, GuidedGradCAM(), layer="target")
    _assert_equal_per_image(ours, theirs)


@pytest.mark.parametrize("base", ["gradcam", "gradcam++"])
def test_refinecam_equals_pytorch_grad_cam(nets, base):
    """The product of the base method's maps at relu1 and the target layer. With
    Grad-CAM++ (both libraries' default base) pytorch-grad-cam adds ε = 1e-6 to α's
    denominator, which ours (the paper's formula) does not: at relu1 the gradients are
    small enough (~1e-5) for ε to change its map, so that case is compared with a looser
    bound (r = 0.982–0.996 per image here; Grad-CAM++ alone at relu1: r ≈ 0.98–0.99).
    With Grad-CAM an image whose two maps do not overlap is all zero in both."""
    net, model, x, torch_x = nets
    reference = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus}[base]
    cam = pgc.RefineCAM(model=net, target_layers=[net.relu1, net.relu2], base_method=reference)
    theirs = cam(input_tensor=torch_x, targets=[ClassifierOutputTarget(c) for c in CLASSES])
    ours = _ours(model, x, RefineCAM(layers=["relu1"], base=base), layer="target")
    if base == "gradcam":
        _assert_equal_where_shown(ours, theirs)
    else:
        for mine, reference_map in zip(ours, theirs, strict=True):
            assert np.corrcoef(mine.ravel(), reference_map.ravel())[0, 1] >= 0.95
