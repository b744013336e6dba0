"""What is explained: classes, and task targets (segmentation, detection, regression, similarity).

Example:

    from keras_cam.targets import segmentation
    keras_cam.explain(model, images, targets=segmentation(class_id=1))
"""

from keras_cam.targets.tasks import (
    MULTI_LABEL,
    DetectionTarget,
    Marks,
    OutputTarget,
    SegmentationTarget,
    SimilarityTarget,
    TaskTarget,
    detection,
    output,
    segmentation,
    similarity,
)

__all__ = [
    "MULTI_LABEL",
    "DetectionTarget",
    "Marks",
    "OutputTarget",
    "SegmentationTarget",
    "SimilarityTarget",
    "TaskTarget",
    "detection",
    "output",
    "segmentation",
    "similarity",
]
