"""Where an event goes: TensorBoard, CSV, a folder."""
