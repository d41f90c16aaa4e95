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
    ``math``, or ``mixture`` for all three) or the path of a UTF-8 text file.
    """
    from pathlib import Path

    from minimistral.data.corpus import load_documents
    from minimistral.data.sources import SOURCES

    if Path(calib).is_file():
        texts = [Path(calib).read_text(encoding="utf-8")]
    elif calib in (*SOURCES, "mixture"):
        train = load_documents()["train"]
        texts = [t for t, s in zip(train["text"], train["source"], strict=True) if calib in (s, "mixture")]
        texts = texts[:: max(1, len(texts) // 64)]  # spread over documents
    else:
        raise ValueError(f"--calib {calib!r}: not a file, nor one of {', '.join((*SOURCES, 'mixture'))}")
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer.encode(text))
        if len(ids) >= n_tokens:
            break
    n = min(len(ids), n_tokens) // seq_len
    if n == 0:
        raise ValueError(f"--calib {calib!r}: fewer than {seq_len} tokens of text")
    windows = torch.tensor(ids[: n * seq_len]).view(n, seq_len)
    return [windows[i : i + batch_size] for i in range(0, n, batch_size)]
