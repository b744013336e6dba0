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
    re-run, and where the head starts with global pooling and a Dense layer,
    only the layers after those (zeroing a channel commutes with the pooling
    and is a rank-1 change of the Dense output). See `batch_size` and
    `max_channels`.

    Example:

    >>> from keras_cam.methods import AblationCAM
    >>> keras_cam.explain(model, images, method=AblationCAM(batch_size=256))  # doctest: +SKIP
    """

    name = "ablationcam"
    description = "Ablation-CAM (Desai & Ramaswamy 2020): score drop when a channel is zeroed."
    paper = "Desai & Ramaswamy, WACV 2020"
    cost = (
        "1 forward + K forward passes of the layers after the target (K = kept channels), per image"
    )

    def channel_weights(self, activations, gradients, classes, forward=None):
        images = activations.shape[0]
        kept = self.kept_channels(activations)
        count = kept.shape[-1]
        flat_kept = ops.reshape(kept, (-1,))

        def ablated_scores(index):
            image = index // count
            return forward.score_ablated(
                image, ops.take(flat_kept, index), ops.take(classes, image)
            )

        ablated = forward.map_chunks(ablated_scores, images * count, self.batch_size)
        scores = forward.scores[:, None]
        drops = scores - ops.reshape(ablated, (images, count))
        weights = ops.where(scores != 0, safe_divide(drops, ops.abs(scores)), drops)
        return self.spread(weights, kept, activations)
