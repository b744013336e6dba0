"""The `keras-cam` command line."""

from keras_cam.cli.command import main

__all__ = ["main"]
