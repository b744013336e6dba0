"""The Keras side: the callback, background writing, distribution, CAM-guided training."""
