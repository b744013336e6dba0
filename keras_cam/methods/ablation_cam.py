"""Ablation-CAM."""

from keras import ops

from keras_cam.methods.base import safe_divide
from keras_cam.methods.perturbation import PerturbationMethod


class AblationCAM(PerturbationMethod):
    """Ablation-CAM: a channel's weight is the score lost when it is zeroed.

    Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep
    Convolutional Network via Gradient-free Localization", WACV 2020.

        w_c = (S − S_c) / |S|,    L = ReLU(Σ_c w_c A_c)

    where `S_c` is the score with channel `c` of the target layer set to 0
    (`S − S_c` where `S` is 0). Only the layers after the target layer are
    re-run; when they start with global average or max pooling, which
    commutes with zeroing a channel, only the layers after the pooling. See
    `batch_size` and `max_channels`.

    Example:

    >>> from keras_cam.methods import AblationCAM
    >>> keras_cam.explain(model, images, method=AblationCAM(batch_size=256))  # doctest: +SKIP
    """

    name = "ablationcam"
    description = "Ablation-CAM (Desai & Ramaswamy 2020): score drop when a channel is zeroed."

    def channel_weights(self, activations, gradients, classes, forward=None):
        images, channels = activations.shape[0], activations.shape[-1]
        kept = self.kept_channels(activations)
        count = kept.shape[-1]
        flat_kept = ops.reshape(kept, (-1,))

        def ablated_scores(index):
            image = index // count
            keep = 1.0 - ops.one_hot(ops.take(flat_kept, index), channels)
            image_classes = ops.take(classes, image)
            if forward.pooled is not None:
                pooled = ops.take(forward.pooled, image, axis=0)
                return forward.score_pooled(pooled * keep, image_classes)
            ablated = ops.take(activations, image, axis=0) * keep[:, None, None, :]
            return forward.score_activations(ablated, image_classes)

        ablated = forward.map_chunks(ablated_scores, images * count, self.batch_size)
        scores = forward.scores[:, None]
        drops = scores - ops.reshape(ablated, (images, count))
        weights = ops.where(scores != 0, safe_divide(drops, ops.abs(scores)), drops)
        return self.spread(weights, kept, channels)
