"""Prompts graded against rubric items, for General RL (paper §4).

The paper's General RL has a judge grade each rollout against rubric items written per prompt; the
reward is the fraction of items met. Our judge is a program: every item is a check a program can
make (length, a required word, the last character, case, the first word), so the reward is exact.

The prompts are the English questions of PyPI ``chatterbot-corpus`` 1.3.3 (BSD-3; 897 distinct
question-answer pairs, 748 distinct questions, 21 topics), each followed by two instructions drawn
from :data:`ITEMS`, for example ``What is a computer?`` + ``Answer in at most 10 words. End with an
exclamation mark.``
The reference answer for SFT is the corpus's own answer, edited until it meets both items (so SFT
teaches the format and RL has something to sharpen). Held out by question: a question's every
prompt is in one split.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from minimistral.data.sources import DataError, Download, extracted

CHATTERBOT_WHEEL = Download(
    "chatterbot-corpus",
    "1.3.3",
    "chatterbot_corpus-1.3.3-py2.py3-none-any.whl",
    "86de5300afb9a80826386339d3bec79c0a72eb0358abb8327e2ecef5ae0ce154",
)
ENGLISH = "chatterbot_corpus/data/english/"


@dataclass(frozen=True)
class Item:
    """One rubric item: the instruction the prompt states, the check, and an edit that makes a text meet it."""

    name: str
    instruction: str
    check: Callable[[str], bool]
    apply: Callable[[str], str]


def _words(text: str) -> list[str]:
    return text.split()


def _max_words(n: int) -> Item:
    return Item(f"max_words_{n}", f"Answer in at most {n} words.", lambda t: 0 < len(_words(t)) <= n,
                lambda t: " ".join(_words(t)[:n]))  # fmt: skip


def _include(word: str) -> Item:
    def add(t: str) -> str:
        return t if _has(t, word) else f"{t.rstrip()} {word}"

    return Item(f"include_{word}", f'Use the word "{word}".', lambda t: _has(t, word), add)


def _has(text: str, word: str) -> bool:
    return word in re.findall(r"[a-z']+", text.lower())


ITEMS: tuple[Item, ...] = (  # in the order meet() applies them
    Item("start_well", 'Begin with "well".', lambda t: t.lower().startswith("well"), lambda t: f"well, {t}"),
    _max_words(5),
    _max_words(10),
    _include("yes"),
    _include("friend"),
    Item("exclaim", "End with an exclamation mark.", lambda t: t.rstrip().endswith("!"),
         lambda t: t.rstrip().rstrip(".?!,;:") + "!"),
    Item("lowercase", "Write in lowercase letters only.", lambda t: bool(t) and t == t.lower(), str.lower),
)  # fmt: skip
CONFLICTS = {frozenset({"max_words_5", "max_words_10"})}  # never drawn together


@dataclass(frozen=True)
class RubricPrompt:
    question: str
    items: tuple[str, ...]  # names in ITEMS
    reference: str  # the corpus's answer, edited to meet every item
    topic: str

    @property
    def prompt(self) -> str:
        return f"{self.question}\n" + " ".join(ITEM[n].instruction for n in self.items)

    def chat(self, thinking: bool = True) -> list[dict[str, str]]:
        """The prompt and its reference; ``thinking``: the reply first restates the rules it must meet."""
        reply = {"role": "assistant", "content": self.reference}
        rules = " ".join(ITEM[n].instruction for n in self.items)
        return [{"role": "user", "content": self.prompt}, reply | ({"thinking": rules} if thinking else {})]


ITEM = {i.name: i for i in ITEMS}


def rubric_score(items: tuple[str, ...], answer: str) -> float:
    """The fraction of the rubric items the answer meets (the General RL reward)."""
    return sum(ITEM[n].check(answer.strip()) for n in items) / len(items)


def meet(items: tuple[str, ...], text: str) -> str:
    """``text`` edited to meet every item: prefix first, then the length limit (leaving room for the required
    words), the required words, the final punctuation, the case."""
    order = [i.name for i in ITEMS if i.name == "start_well"] + [i.name for i in ITEMS if i.name != "start_well"]
    words_needed = sum(n.startswith("include_") for n in items)
    text = text.strip()
    for name in sorted(items, key=order.index):
        if name.startswith("max_words_"):
            text = " ".join(_words(text)[: int(name.rsplit("_", 1)[1]) - words_needed])
        else:
            text = ITEM[name].apply(text)
    return text


# ----------------------------------------------------------------------------- the corpus
def chatterbot_pairs(root: Path | None = None) -> list[dict[str, str]]:
    """The English (topic, question, answer) pairs of chatterbot-corpus, distinct, in file order."""
    directory = extracted("chatterbot-english", CHATTERBOT_WHEEL, _extract_pairs, root)
    return [json.loads(line) for line in (directory / "pairs.jsonl").read_text().splitlines()]


def _extract_pairs(wheel: Path, out: Path) -> list[str]:
    import yaml

    pairs, seen = [], set()
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(n for n in z.namelist() if n.startswith(ENGLISH) and n.endswith(".yml")):
            for turns in yaml.safe_load(z.read(name)).get("conversations", []):
                q, a = [*turns, None, None][:2] if isinstance(turns, list) else (None, None)
                if isinstance(q, str) and isinstance(a, str) and (q, a) not in seen:
                    seen.add((q, a))
                    pairs.append({"topic": Path(name).stem, "question": q.strip(), "answer": a.strip()})
    if len(pairs) < 500:
        raise DataError(f"{wheel}: only {len(pairs)} English question-answer pairs under {ENGLISH}")
    (out / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return ["pairs.jsonl"]


def is_test_question(question: str, share: float = 0.15) -> bool:
    """Held out by question: a fixed ``share`` of questions, chosen by hash (the same on every machine)."""
    return int(hashlib.sha256(question.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def rubric_prompts(split: str, n: int, seed: int = 0, max_words: int = 16) -> list[RubricPrompt]:
    """``n`` prompts of ``split`` (``train`` or ``test``): a question, two items, the edited reference.

    Answers longer than ``max_words`` words are left out (a tiny model's context is short).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split {split!r}: choose train or test")
    pairs = [p for p in chatterbot_pairs() if is_test_question(p["question"]) == (split == "test")]
    pairs = [p for p in pairs if len(_words(p["answer"])) <= max_words]
    rng, out = random.Random(f"{split}-{seed}"), []
    while len(out) < n:
        pair = rng.choice(pairs)
        items = tuple(sorted(rng.sample([i.name for i in ITEMS], 2)))
        if frozenset(items) in CONFLICTS:
            continue
        out.append(RubricPrompt(pair["question"], items, meet(items, pair["answer"]), pair["topic"]))
    return out
