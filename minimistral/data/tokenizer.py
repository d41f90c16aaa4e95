"""Tokenizers: Tekken (``tekken.json``, via mistral-common), ``tokenizer.json``, and a small Tekken-style BPE we train.

Ministral 3 uses Tekken, a byte-level BPE with a 131,072-entry vocabulary (paper
section 2): ``<s>`` = 1, ``</s>`` = 2, ``[IMG]`` = 10, ``[IMG_BREAK]`` = 12, ``[IMG_END]`` = 13.

For the laptop-scale model we train the same kind of tokenizer on our own corpus
(``train_tokenizer``): byte-level BPE, Tekken's pre-tokenisation regex, and Tekken's
first 32 control tokens at Tekken's ids, so that every later stage (chat template,
tool calls, images) can use the real ids. Every byte is in the base alphabet, so any
valid UTF-8 text encodes and decodes back exactly.

Literal control-token strings in text (a document that contains ``"<s>"`` or
``"[INST]"``) are encoded as ordinary text, exactly as Tekken does: control tokens
enter a sequence only by id (``pack`` adds BOS/EOS), never from user or corpus text,
so text cannot forge them.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from minimistral.errors import CheckpointError, run_dir_hint

# The first 32 ids of the real Tekken vocabulary (tekken_240911.json), same names, same ids.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<unk>",  # 0
    "<s>",  # 1: BOS
    "</s>",  # 2: EOS
    "[INST]",
    "[/INST]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
    "[TOOL_CALLS]",
    "[IMG]",  # 10
    "<pad>",  # 11
    "[IMG_BREAK]",  # 12
    "[IMG_END]",  # 13
    "[PREFIX]",
    "[MIDDLE]",
    "[SUFFIX]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",  # 19
    *(f"<SPECIAL_{i}>" for i in range(20, 32)),
)
UNK_ID, BOS_ID, EOS_ID, PAD_ID = 0, 1, 2, 11

# Tekken's pre-tokenisation regex (``config.pattern`` of tekken_240911.json): words with an
# optional leading non-letter, single digits, punctuation runs, newlines, whitespace.
TEKKEN_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


class Tokenizer:
    """``encode(text) -> ids`` (with BOS) and ``decode(ids) -> text`` over either backend."""

    def __init__(self, encode, decode, bos_id: int | None, eos_id: int | None, source: Path):
        self._encode, self._decode = encode, decode
        self.bos_id, self.eos_id, self.source = bos_id, eos_id, source

    @property
    def sha256(self) -> str:
        """The sha256 of the file it was read from: the tokenizer's identity."""
        return file_sha256(self.source)

    def encode(self, text: str, bos: bool = True) -> list[int]:
        ids = self._encode(text)
        return ([self.bos_id] if bos and self.bos_id is not None else []) + ids

    def decode(self, ids: list[int]) -> str:
        return self._decode(list(ids))


TOKENIZER_FILES = ("tekken.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def tokenizer_files(path: str | os.PathLike) -> dict[str, Path]:
    """The tokenizer files a checkpoint directory holds, by name (to copy them beside a model derived from it)."""
    return {name: Path(path) / name for name in TOKENIZER_FILES if (Path(path) / name).is_file()}


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """The tokenizer stored in a checkpoint directory (``tekken.json`` preferred over ``tokenizer.json``)."""
    d = Path(path)
    if (d / "tekken.json").is_file():
        return _tekken(d / "tekken.json")
    if (d / "tokenizer.json").is_file():
        return _hf_tokenizer(d / "tokenizer.json")
    raise CheckpointError(f"{d}: no tekken.json or tokenizer.json{run_dir_hint(d)}")


def file_sha256(file: str | os.PathLike) -> str:
    return hashlib.sha256(Path(file).read_bytes()).hexdigest()


def per_tokenizer(build: Callable) -> Callable:
    """Cache ``build(tokenizer_dir, *args)`` by the tokenizer's content (the sha256 of the file
    :func:`load_tokenizer` reads): every checkpoint of one family shares one build of its datasets per process."""
    built: dict = {}

    @functools.wraps(build)
    def cached(tokenizer_dir, *args):
        files = [Path(tokenizer_dir) / name for name in ("tekken.json", "tokenizer.json")]
        file = next((f for f in files if f.is_file()), None)
        key = (file_sha256(file) if file else str(tokenizer_dir), *args)
        if key not in built:
            built[key] = build(tokenizer_dir, *args)
        return built[key]

    return cached


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
    try:
        tok = read_tokenizer_json(file)
    except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
        raise CheckpointError(f"{file}: not a valid tokenizer.json ({exc})") from None
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")

    def encode(s: str) -> list[int]:
        return tok.encode(s, add_special_tokens=False).ids

    return Tokenizer(encode, lambda ids: tok.decode(ids, skip_special_tokens=True), bos, eos, file)


# Text of many kinds (words, digits, punctuation, code, other scripts): two tokenizers that encode it alike
PROBE_TEXT = (
    "To be, or not to be: that is the question. Of Man's first disobedience, and the fruit\n"
    "Solve 3x + 7 = 22; x = 5 (1,024 tokens at 0.5%). def f(a, b):\n\treturn a * b  # naïve café\n"
    "Привет, мир! 東京は晴れ。 ¿Qué tal? [INST] What is the pass key? [/INST] 90210 </s>"
)


def check_same_tokenizer(student: str | os.PathLike, teacher: str | os.PathLike) -> Tokenizer:
    """Distillation compares logits id by id: the teacher's tokenizer must encode text as the student's.

    Identical files pass at once; otherwise both encode ``PROBE_TEXT`` and must give the same ids
    (a Tekken file and its ``tokenizer.json`` export do). A teacher without a tokenizer is not checked.
    Returns the student's tokenizer (read once, for the caller to encode its data with).
    """
    a = load_tokenizer(student)
    if not tokenizer_files(teacher):
        return a
    b = load_tokenizer(teacher)
    if a.sha256 != b.sha256 and a.encode(PROBE_TEXT) != b.encode(PROBE_TEXT):
        raise CheckpointError(f"--teacher {teacher}: its tokenizer encodes text differently from the student's")
    return a


def read_tokenizer_json(file: str | os.PathLike) -> HFTokenizer:
    """A ``tokenizers.Tokenizer`` from ``tokenizer.json`` that encodes control-token strings in text as text.

    ``encode_special_tokens`` is a runtime switch that ``tokenizer.json`` does not store,
    so it is set here, on every load.
    """
    tok = HFTokenizer.from_file(str(file))
    tok.encode_special_tokens = True
    return tok


def new_bpe_tokenizer() -> HFTokenizer:
    """The untrained Tekken-style pipeline: split by Tekken's regex -> bytes as 256 symbols -> BPE.

    Decoding maps the byte symbols back and reads the bytes as UTF-8.
    """
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(TEKKEN_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096) -> HFTokenizer:
    """Byte-level BPE trained on ``texts``: ids 0..31 are ``SPECIAL_TOKENS``, then the 256 bytes, then merges.

    Deterministic: the same texts in the same order give the same ``tokenizer.json``.
    Save it with ``tok.save(path)``; ``load_tokenizer(dir)`` and ``read_tokenizer_json`` read it back.
    """
    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ValueError(f"vocab_size {vocab_size} < {len(SPECIAL_TOKENS)} special tokens + 256 bytes")
    texts = list(texts)
    tok = new_bpe_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),  # first, so they get ids 0..31
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen in the data or not
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer, length=len(texts))
    tok.encode_special_tokens = True
    return tok


def bytes_per_token(tokenizer: HFTokenizer | Tokenizer, texts: Sequence[str]) -> float:
    """Compression: UTF-8 bytes of ``texts`` divided by the number of tokens they encode to (no BOS/EOS).

    ``tokenizer`` is a ``tokenizers.Tokenizer`` or this module's ``Tokenizer`` (e.g. real Tekken).
    """
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    if isinstance(tokenizer, Tokenizer):
        n_tokens = sum(len(tokenizer.encode(t, bos=False)) for t in texts)
    else:
        n_tokens = sum(len(e.ids) for e in tokenizer.encode_batch(list(texts), add_special_tokens=False))
    return n_bytes / max(n_tokens, 1)
