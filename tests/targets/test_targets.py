import numpy as np
import pytest

from keras_cam.targets.tasks import PREDICTED, labels_to_class_ids, resolve_class_ids


def test_forms_of_targets():
    np.testing.assert_array_equal(resolve_class_ids("predicted", 3, 5), [PREDICTED] * 3)
    np.testing.assert_array_equal(resolve_class_ids(4, 2, 5), [4, 4])
    np.testing.assert_array_equal(resolve_class_ids([0, 3], 2, 5), [0, 3])
    np.testing.assert_array_equal(resolve_class_ids("label", 2, 5, labels=[[0, 1], [1, 0]]), [1, 0])
    assert resolve_class_ids(np.int64(1), 1, 2).dtype == np.int32


def test_labels_of_shape_n_by_1_are_sparse():
    np.testing.assert_array_equal(labels_to_class_ids(np.array([[2.0], [1.0]]), 2), [2, 1])


@pytest.mark.parametrize(
    ("targets", "labels", "message"),
    [
        ("label", None, "needs labels"),
        ("best", None, "Unknown targets 'best'"),
        (5, None, "Class index 5 is out of range"),
        (-2, None, "Class index -2 is out of range"),
        ([0.5, 1.0], None, "one integer class index per image"),
        ("label", [1, 2, 3], "3 labels for 2 images"),
    ],
)
def test_bad_targets(targets, labels, message):
    with pytest.raises(ValueError, match=message):
        resolve_class_ids(targets, 2, 5, labels=labels)


@pytest.mark.parametrize(
    ("targets", "labels", "message"),
    [
        (True, None, r"targets=True is a bool, not a class index"),
        ("label", [0.5, 1.0], r"whole class indices.*fractional"),
        ("label", ["cat", "dog"], r"class indices or one-hot rows.*map names to indices"),
    ],
)
def test_targets_and_labels_that_are_not_class_indices_are_errors(targets, labels, message):
    with pytest.raises(ValueError, match=message):
        resolve_class_ids(targets, 2, 3, labels)
