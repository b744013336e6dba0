"""LeGrad."""

from __future__ import annotations

from keras import ops

from keras_cam.methods.attention import AttentionMethod


class LeGrad(AttentionMethod):
    """LeGrad: each block's attention gradient of the class score read at that block.

    Bousselham et al., "LeGrad: An Explainability Method for Vision
    Transformers via Feature Formation Sensitivity", arXiv 2404.03214
    (TorchCAM 0.5.0's `LeGrad`). Each block `l`'s output tokens `z_l` are
    scored by the model's own head, through its final normalisation, on
    their mean token: `s_l = head(LN(mean_t z_l))` (the logit of the
    explained class). With `A_l` block `l`'s attention probabilities:

        E_l = mean_{h, q} ReLU(∂s_l / ∂A_l)        (N, T): one value per key token,
        map = mean_l E_l[patches]

    Attention values are not multiplied into the gradients. The blocks are
    those of a pre-norm transformer (ViT, DeiT, DINOv2), whose block outputs
    are read at the input of the next block's first normalisation and of
    the final normalisation. Costs one forward pass (the head runs once per
    selected block) and one backward pass per selected block.

    Args:
        blocks: the blocks averaged, as attention-layer indices in call order
            (negative from the end) or a slice. Defaults to `None`: all
            (TorchCAM's example takes the last four: `blocks=slice(-4, None)`).
        heads: the heads averaged, as indices. Defaults to `None`: all.

    Example:

    >>> from keras_cam.methods import LeGrad
    >>> keras_cam.explain(vit, images, method="legrad")                     # doctest: +SKIP
    >>> keras_cam.explain(vit, images, method=LeGrad(blocks=slice(-4, None)))  # doctest: +SKIP
    """

    name = "legrad"
    description = "LeGrad (Bousselham et al. 2024): per-block attention gradients of the score."
    paper = (
        "Bousselham et al., LeGrad: An Explainability Method for Vision Transformers via "
        "Feature Formation Sensitivity, arXiv 2404.03214"
    )
    cost = "1 forward + 1 backward pass per block"

    def cam(self, activations, gradients, classes, forward=None):
        attention = forward.attention
        blocks = attention.layers.select(self.blocks)
        grads = attention.layer_gradients(forward.inputs, classes, blocks)
        grads = self.restricted(grads)
        per_block = [ops.mean(ops.relu(gradient), axis=(1, 2)) for gradient in grads]
        return attention.layers.to_map(ops.mean(ops.stack(per_block), axis=0))
