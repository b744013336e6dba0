"""Where an event goes: TensorBoard, CSV, a folder; one reopen-after-error path."""
