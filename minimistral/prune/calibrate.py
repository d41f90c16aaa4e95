"""Calibration for pruning (paper §3.1): forward hooks that gather statistics, and calibration text.

Every statistic of Algorithm 2 is a :class:`Probe`: hooks on one block at a time, accumulated in
streaming form, so the in-memory path (hooks on every block) and the streaming path (one block
loaded at a time, ``prune.streaming``) run the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager

import torch
from torch.utils.hooks import RemovableHandle

from minimistral.arch.model import Block, Ministral3, RMSNorm


# ----------------------------------------------------------------------------- calibration
@contextmanager
def hooks(handles: list):
    """Remove every hook on exit, even after an error."""
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def calibrate(model: Ministral3, batches: Iterable[torch.Tensor], register: Callable[[], list]) -> int:
    """Run ``model`` over ``batches`` with the hooks ``register()`` installs; returns the token count."""
    model.eval()
    device = model.lm_head.weight.device
    tokens = 0
    with hooks(register()):
        for ids in batches:
            model(ids.to(device))
            tokens += ids.numel()
    if tokens == 0:
        raise ValueError("no calibration batches")
    return tokens


class Probe:
    """Calibration statistics gathered by forward hooks, one block at a time.

    ``attach(block, i)`` hooks block ``i`` and ``attach_final(norm)`` the final norm. The
    in-memory functions attach to every block of a model at once (``register``); the
    streaming path attaches to the one block it holds. Both see the same tensors.
    """

    def attach(self, block: Block, i: int) -> list[RemovableHandle]:
        return []

    def attach_final(self, norm: RMSNorm) -> list[RemovableHandle]:
        return []

    def register(self, model: Ministral3) -> Callable[[], list[RemovableHandle]]:
        """The ``register`` argument of :func:`calibrate`: hooks on every block and on the final norm."""

        def register() -> list[RemovableHandle]:
            handles = [h for i, b in enumerate(model.model.layers) for h in self.attach(b, i)]
            return handles + self.attach_final(model.model.norm)

        return register


# ----------------------------------------------------------------------------- calibration data
def calibration_batches(tokenizer, calib: str, n_tokens: int, seq_len: int, batch_size: int = 8) -> list[torch.Tensor]:
    """``n_tokens`` of calibration text as input batches ``[b, seq_len]``, encoded with the model's tokenizer.

    ``calib`` is a source of the project's *training* split (``shakespeare``, ``milton``,
    ``math``, or ``mixture`` for all three) or the path of a UTF-8 text file (``data.corpus.text_windows``).
    """
    from minimistral.data.corpus import text_windows

    windows = text_windows(tokenizer, calib, n_tokens, seq_len, argument="--calib")  # [n, seq_len]
    return [windows[i : i + batch_size].long() for i in range(0, len(windows), batch_size)]
