"""Pictures: numpy in, uint8 images out, no Keras."""
