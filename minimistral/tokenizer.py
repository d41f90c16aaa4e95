"""Tokenizers found next to a checkpoint: Tekken (``tekken.json``, via mistral-common) or ``tokenizer.json``.

Ministral 3 uses Tekken, a byte-level BPE with a 131,072-entry vocabulary (paper
section 2): ``<s>`` = 1, ``</s>`` = 2, ``[IMG]`` = 10, ``[IMG_BREAK]`` = 12, ``[IMG_END]`` = 13.
"""

from __future__ import annotations

import os
from pathlib import Path

from minimistral.errors import CheckpointError


class Tokenizer:
    """``encode(text) -> ids`` (with BOS) and ``decode(ids) -> text`` over either backend."""

    def __init__(self, encode, decode, bos_id: int | None, eos_id: int | None, source: Path):
        self._encode, self._decode = encode, decode
        self.bos_id, self.eos_id, self.source = bos_id, eos_id, source

    def encode(self, text: str, bos: bool = True) -> list[int]:
        ids = self._encode(text)
        return ([self.bos_id] if bos and self.bos_id is not None else []) + ids

    def decode(self, ids: list[int]) -> str:
        return self._decode(list(ids))


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """The tokenizer stored in a checkpoint directory (``tekken.json`` preferred over ``tokenizer.json``)."""
    d = Path(path)
    if (d / "tekken.json").is_file():
        return _tekken(d / "tekken.json")
    if (d / "tokenizer.json").is_file():
        return _hf_tokenizer(d / "tokenizer.json")
    raise CheckpointError(f"{d}: no tekken.json or tokenizer.json to encode the prompt with")


def _tekken(file: Path) -> Tokenizer:
    try:
        from mistral_common.tokens.tokenizers.tekken import Tekkenizer
    except ImportError:
        raise CheckpointError(
            f"{file}: reading Tekken needs mistral-common (pip install 'minimistral[tekken]')"
        ) from None
    try:
        tok = Tekkenizer.from_file(file)
    except Exception as exc:  # mistral-common raises several types for a bad file
        raise CheckpointError(f"{file}: not a valid Tekken file ({exc})") from None
    return Tokenizer(lambda s: tok.encode(s, bos=False, eos=False), tok.decode, tok.bos_id, tok.eos_id, file)


def _hf_tokenizer(file: Path) -> Tokenizer:
    from tokenizers import Tokenizer as HFTokenizer

    try:
        tok = HFTokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
        raise CheckpointError(f"{file}: not a valid tokenizer.json ({exc})") from None
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")

    def encode(s: str) -> list[int]:
        return tok.encode(s, add_special_tokens=False).ids

    return Tokenizer(encode, lambda ids: tok.decode(ids, skip_special_tokens=True), bos, eos, file)
