"""Errors raised for bad checkpoints and configs: one line that names the file or key."""


class CheckpointError(ValueError):
    """A checkpoint directory, file, tensor or config value is unusable; the message says which."""


def run_dir_hint(path) -> str:
    """`` (a run directory? its model is in DIR/checkpoint)`` when ``path`` is a training run, else ``""``."""
    from pathlib import Path

    inner = Path(path) / "checkpoint"
    return f" (a run directory? its model is in {inner})" if (inner / "config.json").is_file() else ""


class ImageError(ValueError):
    """An image file, its mode, or the image inputs of a model call are unusable; the message says which."""
