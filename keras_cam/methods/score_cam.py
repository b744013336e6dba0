"""Score-CAM."""

from keras import ops

from keras_cam.core.spatial import map_axes, resize
from keras_cam.methods.perturbation import PerturbationMethod


def _min_max(maps):
    axes = map_axes(maps)
    low = ops.min(maps, axis=axes, keepdims=True)
    span = ops.max(maps, axis=axes, keepdims=True) - low
    return ops.where(span > 0, (maps - low) / ops.where(span > 0, span, 1.0), 0.0)


class ScoreCAM(PerturbationMethod):
    """Score-CAM: each channel, as a mask on the input, is weighted by the score it keeps.

    Wang et al., "Score-CAM: Score-Weighted Visual Explanations for
    Convolutional Neural Networks", CVPR Workshops 2020. Gradient-free. Each
    activation channel is upsampled to the input size and min-max
    normalised to a mask `M_c`; the masked input is scored by the whole model:

        w_c = softmax_c( S(X ⊙ M_c) ),    L = ReLU(Σ_c w_c A_c)

    (the paper's baseline score `S(X_b)` is the same for every channel and
    cancels in the softmax). Costs one forward pass per image and kept
    channel, batched: see `batch_size` and `max_channels`.

    Example:

    >>> from keras_cam.methods import ScoreCAM
    >>> explainer = keras_cam.CAMExplainer(model, ScoreCAM(max_channels=64))  # doctest: +SKIP
    """

    name = "scorecam"
    description = "Score-CAM (Wang et al. 2020): channels weighted by masked-input scores."
    paper = "Wang et al., CVPR Workshops 2020 (arXiv 1910.01279)"
    cost = "1 forward + K forward passes per image (K = kept channels)"

    def perturb_masks(self, masks, samples):
        """The masks of one chunk (B, *size), each drawn for its `samples` id (B,).

        Score-CAM has one sample per mask and keeps it; SS-CAM adds noise, IS-CAM
        scales it.
        """
        return masks

    def channel_weights(self, activations, gradients, classes, forward=None):
        images, *spatial, _ = activations.shape
        kept = self.kept_channels(activations)
        count = kept.shape[-1]
        kept_index = ops.reshape(kept, (images, *([1] * len(spatial)), count))
        maps = ops.take_along_axis(activations, kept_index, axis=-1)
        # (N, *spatial, K) -> (N·K, *spatial): one mask per image and kept channel.
        maps = ops.reshape(ops.moveaxis(maps, -1, 1), (-1, *spatial))
        inputs = forward.inputs
        size = inputs.shape[2:] if forward.input_channels_first else inputs.shape[1:-1]
        channel_axis = 1 if forward.input_channels_first else -1
        items = images * count

        def masked_scores(index):
            # index = sample · (N·K) + image · K + kept channel
            sample, item = index // items, index % items
            image = item // count
            masks = _min_max(resize(ops.take(maps, item, axis=0), size))
            masks = ops.expand_dims(self.perturb_masks(masks, sample), channel_axis)
            masked = ops.take(inputs, image, axis=0) * ops.cast(masks, inputs.dtype)
            return forward.score_inputs(masked, ops.take(classes, image))

        scores = forward.map_chunks(masked_scores, self.samples * items, self.batch_size)
        # The mean over samples; the baseline score S(X_b) of the papers is the same for
        # every channel and cancels in the softmax.
        scores = ops.mean(ops.reshape(scores, (self.samples, images, count)), axis=0)
        return self.spread(ops.softmax(scores, axis=-1), kept, activations)
