"""Deep Feature Factorization against pytorch-grad-cam 1.5.7 on weights copied from a torch CNN.

The same nets and tolerances as `test_pytorch_references.py`; the reference runs
scikit-learn's NMF in float32 on the same activations.
"""

import keras
import numpy as np
import pytest
from test_pytorch_references import CLASSES, _assert_equal_per_image
from test_pytorch_references import nets as nets  # the shared fixture

import keras_cam
from keras_cam.methods import DeepFeatureFactorization
from keras_cam.methods.deep_feature_factorization import factorize

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow
CONCEPTS = 3


def test_dff_equals_pytorch_grad_cam(nets):
    from pytorch_grad_cam.feature_factorization.deep_feature_factorization import (
        DeepFeatureFactorization as Reference,
    )

    net, model, x, torch_x = nets

    def head(concepts):  # pytorch-grad-cam's computation_on_concepts: the head on each vector
        return net.out(torch.relu(net.mix(concepts[:, :, None, None])).mean(dim=(2, 3)))

    embeddings, explanations, outputs = Reference(net, net.target, None, head)(
        torch_x, n_components=CONCEPTS
    )
    features = keras.Model(model.input, model.get_layer("target").output)
    ours_embeddings, ours_maps = factorize(features(x), concepts=CONCEPTS)
    ours_embeddings = keras.ops.convert_to_numpy(ours_embeddings)
    ours_maps = np.moveaxis(keras.ops.convert_to_numpy(ours_maps), -1, 1)  # (N, k, h, w)
    np.testing.assert_allclose(ours_embeddings, embeddings, atol=1e-4)
    # The reference scales each image's concept maps to [0, 1] (and the input size: the same).
    _assert_equal_per_image(ours_maps.reshape(-1, *ours_maps.shape[2:]),
                            np.asarray(explanations).reshape(-1, *ours_maps.shape[2:]))  # fmt: skip

    # explain(): the map of the concept chosen for each class is the reference's map.
    result = keras_cam.explain(
        model, x, method=DeepFeatureFactorization(CONCEPTS), layer="target", targets=CLASSES
    )
    distance = np.abs(ours_maps - result.raw[:, None]).max(axis=(2, 3))
    chosen = np.argmin(distance, axis=1)
    assert distance[np.arange(len(x)), chosen].max() < 1e-4 * ours_maps.max()
    theirs = np.stack([explanations[i][c] for i, c in enumerate(chosen)])
    _assert_equal_per_image(result.raw, theirs)
    # The linearised choice (Grad-CAM's weights · embedding) is the concept whose vector the
    # reference's head (its computation_on_concepts) scores highest for the class.
    np.testing.assert_array_equal(chosen, np.argmax(np.asarray(outputs)[:, CLASSES], axis=0))
