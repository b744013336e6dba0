"""Gradient-weighted attention rollout."""

from __future__ import annotations

from keras import ops

from keras_cam.methods.attention import AttentionMethod


class GradientRollout(AttentionMethod):
    """Gradient-weighted rollout: attention weighted by its gradient, accumulated over blocks.

    Chefer, Gur & Wolf, "Generic Attention-model Explainability for
    Interpreting Bi-Modal and Encoder-Decoder Transformers", ICCV 2021,
    arXiv 2103.15679 (their `generate_relevance` for ViTs). With `A_l`
    (heads, T, T) block `l`'s attention probabilities and `∇A_l = ∂S/∂A_l`
    the gradient of the explained score:

        Ā_l = E_h[(∇A_l ⊙ A_l)^+],    R_0 = I,    R_l = R_{l-1} + Ā_l · R_{l-1},
        map = R_L[cls, patches]

    (the mean of R's rows where there is no class token). Class specific,
    unlike rollout. Costs one forward and one backward pass.

    Args:
        blocks: the blocks accumulated, as attention-layer indices in call
            order (negative from the end) or a slice. Defaults to `None`: all.
        heads: the heads averaged, as indices. Defaults to `None`: all.

    Example:

    >>> keras_cam.explain(vit, images, method="gradrollout")       # doctest: +SKIP
    """

    name = "gradrollout"
    description = "Gradient-weighted rollout (Chefer et al. 2021): E_h[(grad*A)+] accumulated."
    paper = (
        "Chefer, Gur & Wolf, Generic Attention-model Explainability for Interpreting "
        "Bi-Modal and Encoder-Decoder Transformers, ICCV 2021"
    )
    cost = "1 forward + 1 backward pass"

    def cam(self, activations, gradients, classes, forward=None):
        attention = forward.attention
        probabilities, grads = attention.gradients(forward.inputs, classes)
        probabilities = self.selected(attention, probabilities)
        grads = self.selected(attention, grads)
        tokens = probabilities[0].shape[-1]
        relevance = ops.eye(tokens)[None]
        for block, gradient in zip(probabilities, grads, strict=True):
            weighted = ops.mean(ops.relu(gradient * block), axis=1)
            relevance = relevance + ops.matmul(weighted, relevance)
        return attention.layers.to_map(attention.layers.readout(relevance))
