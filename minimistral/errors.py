"""Errors raised for bad checkpoints and configs: one line that names the file or key."""


class CheckpointError(ValueError):
    """A checkpoint directory, file, tensor or config value is unusable; the message says which."""


class ImageError(ValueError):
    """An image file, its mode, or the image inputs of a model call are unusable; the message says which."""
