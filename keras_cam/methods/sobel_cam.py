"""Sobel-CAM, a baseline."""

from keras import ops

from keras_cam.core.spatial import channels_last, resize
from keras_cam.methods.base import CAMMethod

# OpenCV's RGB -> grey weights (ITU-R BT.601), as pytorch-grad-cam's `sobel_cam`.
_GREY = (0.299, 0.587, 0.114)


def _sobel(grey):
    """0.5·|∂x| + 0.5·|∂y| of (N, H, W) by the 3×3 Sobel kernels, edges reflected as OpenCV."""
    height, width = grey.shape[1:]
    padded = ops.pad(grey, ((0, 0), (1, 1), (1, 1)), mode="reflect")

    def shifted(down, right):
        return padded[:, 1 + down : 1 + down + height, 1 + right : 1 + right + width]

    # Each kernel is a central difference along its axis times [1, 2, 1] across it.
    gx = (shifted(-1, 1) + 2.0 * shifted(0, 1) + shifted(1, 1)) - (
        shifted(-1, -1) + 2.0 * shifted(0, -1) + shifted(1, -1)
    )
    gy = (shifted(1, -1) + 2.0 * shifted(1, 0) + shifted(1, 1)) - (
        shifted(-1, -1) + 2.0 * shifted(-1, 0) + shifted(-1, 1)
    )
    return 0.5 * ops.abs(gx) + 0.5 * ops.abs(gy)


class SobelCAM(CAMMethod):
    """Sobel-CAM: the input's edge strength; a baseline that ignores the model.

    pytorch-grad-cam's `sobel_cam`, the floor for the sanity checks and the
    metrics: a map of edges, which a method must beat to show more than the
    image's contrast. The model input `X` is turned grey (OpenCV's RGB
    weights for 3 channels, the channel mean otherwise), filtered with the
    3×3 Sobel kernels (edges reflected, as OpenCV), and averaged down to the
    target layer's resolution, like every map here:

        G = 0.299 X_R + 0.587 X_G + 0.114 X_B,
        L = 0.5 |K_x * G| + 0.5 |K_y * G|,    K_x = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]

    pytorch-grad-cam rounds each term to uint8 (`cv2.convertScaleAbs`); here
    they stay float, on the input as the model sees it (after `preprocess`).
    Images only (2-D inputs of at least 2×2 pixels).
    """

    name = "sobelcam"
    description = "Sobel-CAM (pytorch-grad-cam): the input's Sobel edge strength; a baseline."
    paper = "pytorch-grad-cam (Gildenblat et al., 2021); a baseline"
    cost = "1 forward (the edges need none)"
    uses_gradients = False
    uses_forward = True

    def cam(self, activations, gradients, classes, forward=None):
        inputs = forward.inputs
        if len(inputs.shape) != 4:
            raise ValueError(
                f"method='sobelcam' needs image inputs (N, H, W, C), got shape {inputs.shape}."
            )
        pixels = ops.cast(
            channels_last(inputs) if forward.input_channels_first else inputs, "float32"
        )
        if pixels.shape[-1] == 3:
            grey = ops.sum(pixels * ops.convert_to_tensor(_GREY, "float32"), axis=-1)
        else:
            grey = ops.mean(pixels, axis=-1)
        edges = _sobel(grey)
        return ops.cast(_shrink(edges, activations.shape[1:-1]), activations.dtype)


def _shrink(maps, size):
    """(N, H, W) -> (N, *size): block means where the sizes divide, else bilinear."""
    height, width = maps.shape[1:]
    rows, cols = size
    if height % rows == 0 and width % cols == 0:
        blocks = ops.reshape(maps, (-1, rows, height // rows, cols, width // cols))
        return ops.mean(blocks, axis=(2, 4))
    return resize(maps, size)
