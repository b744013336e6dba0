"""Score-CAM."""

from keras import ops

from keras_cam.methods.perturbation import PerturbationMethod


def _min_max(maps):
    low = ops.min(maps, axis=(1, 2), keepdims=True)
    span = ops.max(maps, axis=(1, 2), keepdims=True) - low
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

    def channel_weights(self, activations, gradients, classes, forward=None):
        images, height, width, channels = activations.shape
        kept = self.kept_channels(activations)
        count = kept.shape[-1]
        maps = ops.take_along_axis(activations, kept[:, None, None, :], axis=-1)
        maps = ops.reshape(ops.transpose(maps, (0, 3, 1, 2)), (-1, height, width, 1))
        inputs = forward.inputs
        size = inputs.shape[2:4] if forward.input_channels_first else inputs.shape[1:3]

        def masked_scores(index):
            image = index // count
            masks = ops.image.resize(
                ops.take(maps, index, axis=0), size, "bilinear", data_format="channels_last"
            )
            masks = _min_max(masks)
            if forward.input_channels_first:
                masks = ops.transpose(masks, (0, 3, 1, 2))
            masked = ops.take(inputs, image, axis=0) * ops.cast(masks, inputs.dtype)
            return forward.score_inputs(masked, ops.take(classes, image))

        scores = forward.map_chunks(masked_scores, images * count, self.batch_size)
        weights = ops.softmax(ops.reshape(scores, (images, count)), axis=-1)
        return self.spread(weights, kept, channels)
