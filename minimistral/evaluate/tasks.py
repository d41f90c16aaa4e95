r"""Task metrics for the Table 3 analogue: the tiny parent against its tiny Base children.

Paper Table 3 compares the 24B teacher with the 14B, 8B and 3B Base children on benchmarks
(MMLU, ARC, MATH, ...). Our models are far too small for those, so each kind of benchmark gets
a stand-in built from held-out data (``corpus.val_docs``: documents and problems that training
never saw):

| paper | here | chance |
|---|---|---|
| MATH (CoT, exact match) | ``math_exact_match``: greedy solution, graded on its ``Answer:`` line | ~0 |
| (none: a smooth proxy) | ``math_answer_logprob``: log-prob per token of the reference solution | $-\ln V$ |
| multiple choice (ARC, RACE) | ``cloze_accuracy``: which of 4 passages truly follows a prose context | 1/4 |
| perplexity | bits per byte per source (``evaluate.model_score``) | |

``task_table`` gathers them in the layout of Table 3: one row per evaluation, one column per model.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset

from minimistral.arch.generate import generate, pad_left
from minimistral.arch.hub import from_pretrained
from minimistral.arch.model import Ministral3
from minimistral.data.corpus import Corpus
from minimistral.data.math_problems import math_answer, math_prompt
from minimistral.data.tokenizer import Tokenizer, load_tokenizer
from minimistral.evaluate.cache import cached
from minimistral.evaluate.loss import continuation_logprobs, model_score, token_bytes, validation_windows
from minimistral.files import format_table

# ----------------------------------------------------------------------------- scoring


def _mean_by(keys: Sequence[str], values: Sequence[float]) -> dict[str, float]:
    """Mean of ``values`` per key, keys sorted."""
    groups = defaultdict(list)
    for k, v in zip(keys, values, strict=True):
        groups[k].append(v)
    return {k: float(np.mean(groups[k])) for k in sorted(groups)}


# ----------------------------------------------------------------------------- math: exact match


def math_problems(val_docs: Dataset, n: int) -> list[dict]:
    """The first ``n`` held-out math problems (the validation stream interleaves the tasks: any prefix mixes them)."""
    math = [row for row in val_docs if row["source"] == "math"]
    if not 0 < n <= len(math):
        raise ValueError(f"n must be in 1..{len(math)} (held-out math problems), got {n}")
    return math[:n]


def answer_is_complete(text: str) -> bool:
    """True once ``text`` holds a whole ``Answer:`` line, newline included: grading reads nothing after it."""
    return re.search(r"^Answer:.*\n", text, re.M) is not None


def grade_math(continuation: str, reference: str) -> tuple[str | None, bool]:
    r"""The predicted answer and its exact match $[\,a(\hat y) = a^\ast\,]$.

    $a(\hat y)$ is the first ``Answer:`` line of the continuation (``data.math_answer``);
    both sides are compared as stripped strings, with no numeric normalisation: the
    model was trained on reference answers written exactly this way.
    """
    predicted = math_answer(continuation)
    return predicted, predicted is not None and predicted == reference.strip()


def greedy_until(
    model: Ministral3,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    stop: Callable[[list[int]], bool],
    eos_token_id: int | None = None,
    attention_mask: torch.Tensor | None = None,
) -> list[list[int]]:
    r"""Greedy continuations $y_j = \arg\max_v p(v \mid x, y_{<j})$ of every row of ``input_ids [b, t]``.

    ``generate`` at temperature 0, each row cut at its own EOS (left out) or just after the token
    that made ``stop(tokens so far)`` hold; ``attention_mask``: left-padded rows (``generate.pad_left``).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    new = generate(model, input_ids, max_new_tokens, eos_token_id=eos_token_id, stop=stop,
                   attention_mask=attention_mask)[:, input_ids.shape[1] :]  # fmt: skip
    return [_until(row, stop, eos_token_id) for row in new.tolist()]


def _until(tokens: list[int], stop: Callable[[list[int]], bool], eos_token_id: int | None) -> list[int]:
    """``tokens`` up to its first EOS (excluded), then up to the first prefix for which ``stop`` holds."""
    if eos_token_id in tokens:
        tokens = tokens[: tokens.index(eos_token_id)]
    return next((tokens[:k] for k in range(1, len(tokens) + 1) if stop(tokens[:k])), tokens)


def math_exact_match(
    model: Ministral3,
    tokenizer: Tokenizer,
    problems: Sequence[Mapping[str, str]],
    max_new_tokens: int = 256,
    batch_size: int = 16,
    n_examples: int = 3,
) -> dict:
    r"""Exact match of greedy solutions: $\mathrm{EM} = \frac1N \sum_i [\,a(\hat y_i) = a_i^\ast\,]$ (Table 3, MATH).

    The model sees ``<s>`` + ``math_prompt(question)`` (the document up to ``Solution:``, as in
    ``pretrain.samples``) and writes greedily until EOS, the end of its first ``Answer:`` line, or
    ``max_new_tokens``. Prompts of alike lengths share a left-padded batch. Returns ``accuracy``, ``n``,
    ``per_task`` accuracy, ``answered`` (fraction that wrote an ``Answer:`` line) and ``examples``.
    """
    if not problems:
        raise ValueError("problems is empty")
    prompts = [tokenizer.encode(math_prompt(p["question"])) for p in problems]  # with BOS
    continuations: list[str] = [""] * len(problems)

    def stop(ids: list[int]) -> bool:
        return answer_is_complete(tokenizer.decode(ids))

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for idx in (order[j : j + batch_size] for j in range(0, len(order), batch_size)):
        ids, mask = pad_left([prompts[i] for i in idx], tokenizer.eos_id)  # [b, longest]
        for i, new in zip(idx, greedy_until(model, ids, max_new_tokens, stop, tokenizer.eos_id, mask), strict=True):
            continuations[i] = tokenizer.decode(new)
    graded = [grade_math(c, p["answer"]) for c, p in zip(continuations, problems, strict=True)]
    correct = [float(ok) for _, ok in graded]
    examples = [
        {"question": p["question"], "reference": p["answer"], "predicted": a, "correct": ok, "continuation": c}
        for p, c, (a, ok) in list(zip(problems, continuations, graded, strict=True))[:n_examples]
    ]
    return {
        "accuracy": float(np.mean(correct)),
        "n": len(problems),
        "per_task": _mean_by([p["task"] for p in problems], correct),
        "answered": float(np.mean([a is not None for a, _ in graded])),
        "examples": examples,
    }


# ----------------------------------------------------------------------------- math: a smooth proxy


def math_answer_logprob(
    model: Ministral3, tokenizer: Tokenizer, problems: Sequence[Mapping[str, str]], batch_size: int = 16
) -> dict:
    r"""Mean log-prob per token of the reference worked solution given the question, teacher forced.

    $\bar\ell = \frac{\sum_i \sum_j \log p(y_{i,j} \mid x_i, y_{i,<j})}{\sum_i |y_i|}$, where $x_i$ is
    ``<s>`` + ``math_prompt(question)`` and $y_i$ the rest of the document (``" <solution>\nAnswer: <a>"``)
    then ``</s>``. Why this and not exact match alone: EM of a tiny model sits near 0 and moves in
    steps of $1/N$, while $\bar\ell$ moves with every improvement, starts at about $-\ln V$
    (-8.3 nats for $V = 4096$) for a random model and reaches 0 for a perfect one. Unlike bits per
    byte it scores only what the model must write, given the question. Also returned:
    ``token_accuracy``, the fraction of $y$'s tokens that are the greedy choice; greedy decoding
    reproduces the reference exactly iff all of them are, so it is EM's token-level relaxation.
    """
    if not problems:
        raise ValueError("problems is empty")
    pairs = []
    for p in problems:
        prompt = math_prompt(p["question"])
        if not p["text"].startswith(prompt):
            raise ValueError(f"problems: text of {p.get('doc_id', '?')} does not start with its prompt {prompt!r}")
        completion = [*tokenizer.encode(p["text"][len(prompt) :], bos=False), tokenizer.eos_id]
        pairs.append((tokenizer.encode(prompt), completion))
    scores = continuation_logprobs(model, pairs, batch_size)
    logp = torch.cat([lp for lp, _ in scores])  # [all completion tokens]
    hits = torch.cat([h for _, h in scores]).float()
    per_problem = [lp.mean().item() for lp, _ in scores]
    return {
        "logprob_per_token": logp.mean().item(),
        "token_accuracy": hits.mean().item(),
        "n": len(problems),
        "tokens": logp.numel(),
        "per_task": _mean_by([p["task"] for p in problems], per_problem),  # mean over problems of each task
    }


# ----------------------------------------------------------------------------- multiple-choice cloze


@dataclass(frozen=True)
class ClozeExample:
    """A context and ``len(choices)`` continuations of equal token length; ``choices[label]`` truly follows it."""

    source: str
    context: list[int]
    choices: list[list[int]]
    label: int
    choice_bytes: list[int]  # UTF-8 length of each choice, for per-byte normalisation


def _source_stream(val_docs: Dataset, tokenizer: Tokenizer, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of a source's documents end to end ``[N]`` and, per token, the end offset of its document ``[N]``."""
    docs = [tokenizer.encode(row["text"], bos=False) for row in val_docs if row["source"] == source]
    if not docs:
        raise ValueError(f"sources: no held-out document of source {source!r}")
    ends = np.cumsum([len(d) for d in docs])
    return np.concatenate([np.asarray(d, np.int64) for d in docs]), np.repeat(ends, [len(d) for d in docs])


def _word_starts(ids: np.ndarray, tokenizer: Tokenizer) -> np.ndarray:
    """Whether each token ``[N]`` begins with whitespace, i.e. starts a new word or line."""
    uniq, inverse = np.unique(ids, return_inverse=True)
    starts = np.array([tokenizer.decode([int(t)])[:1].isspace() for t in uniq])
    return starts[inverse]


def _source_cloze(
    val_docs: Dataset, tokenizer: Tokenizer, source: str, n: int, c: int, k: int, choices: int, rng
) -> list[ClozeExample]:
    """``n`` cloze items from one source; distractors come from elsewhere in the same source."""
    ids, doc_end = _source_stream(val_docs, tokenizer, source)
    word = _word_starts(ids, tokenizer)
    pos = np.arange(len(ids))
    # context x = ids[s : s+c], truth y = ids[s+c : s+c+k], inside one document, y starting a word
    contexts = pos[(pos + c + k <= doc_end) & np.roll(word, -c)]
    candidates = pos[(pos + k <= doc_end) & word]  # where a distractor may start
    if len(contexts) < n:
        raise ValueError(f"n={n} exceeds the {len(contexts)} possible cloze items of source {source!r}")
    out = []
    for s in rng.choice(contexts, size=n, replace=False):
        truth = ids[s + c : s + c + k].tolist()
        picked, draws = [truth], 0
        while len(picked) < choices:
            draws += 1
            if draws > 1000 * choices:
                raise ValueError(f"source {source!r} is too short for {choices} distinct choices of {k} tokens")
            d = int(rng.choice(candidates))
            other = ids[d : d + k].tolist()
            if (d < s + c + k and d + k > s) or other in picked:  # overlaps the passage, or a duplicate
                continue
            picked.append(other)
        label = int(rng.integers(choices))
        options = picked[1:]
        options.insert(label, truth)
        nbytes = [len(tokenizer.decode(o).encode()) for o in options]
        out.append(ClozeExample(source, ids[s : s + c].tolist(), options, label, nbytes))
    return out


def cloze_examples(
    val_docs: Dataset,
    tokenizer: Tokenizer,
    n: int,
    context_tokens: int = 64,
    continuation_tokens: int = 16,
    choices: int = 4,
    seed: int = 0,
    sources: Sequence[str] | None = None,
) -> list[ClozeExample]:
    r"""``n`` multiple-choice cloze items per prose source, deterministic under ``seed``.

    Each item is a passage of ``context_tokens`` tokens from a held-out document, the
    ``continuation_tokens`` tokens that truly follow it, and ``choices - 1`` distractors: spans of
    the same token length from elsewhere in the same source (never overlapping the passage and
    all distinct), so style alone cannot tell them apart and only the context can. Every choice
    starts a word (its first token begins with whitespace), so a cut mid-word gives nothing away.
    The true one sits at a uniformly random index. ``sources`` defaults to every source without
    math questions.
    """
    for name, value in (("n", n), ("context_tokens", context_tokens), ("continuation_tokens", continuation_tokens)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if choices < 2:
        raise ValueError(f"choices must be >= 2, got {choices}")
    if sources is None:
        sources = sorted({row["source"] for row in val_docs if not row["question"]})
    rng = np.random.default_rng(seed)
    return [
        ex
        for source in sources
        for ex in _source_cloze(val_docs, tokenizer, source, n, context_tokens, continuation_tokens, choices, rng)
    ]


NORMALIZATIONS = ("none", "token", "byte", "pmi")


def _summed_logprobs(model: Ministral3, pairs: list, batch_size: int) -> np.ndarray:
    r"""$\log p(y \mid x)$ of each pair ``(x, y)`` ``[n_pairs]``."""
    return np.array([lp.sum().item() for lp, _ in continuation_logprobs(model, pairs, batch_size)])


def cloze_scores(
    model: Ministral3, examples: Sequence[ClozeExample], normalize: str = "none", batch_size: int = 32
) -> list[list[float]]:
    r"""Score $s_c$ of every choice $y^c$ of every item, from $L_c = \sum_j \log p(y^c_j \mid x, y^c_{<j})$.

    ``"none"``: $s_c = L_c$, the summed log-likelihood. ``"token"``: $L_c / |y^c|$ (the same ranking
    when, as from ``cloze_examples``, all choices have one token length). ``"byte"``: $L_c$ over the
    UTF-8 bytes of $y^c$ (lm-evaluation-harness's ``acc_norm``, per byte instead of per character).
    ``"pmi"``: $L_c - \log p(y^c \mid \texttt{<s>})$, how much the context raises the choice's
    likelihood (domain-conditional PMI, Holtzman et al. 2021, with ``<s>`` as the null context).
    Our distractors are real text, so how likely a span is on its own varies from choice to choice
    and drowns part of the context's signal in $L_c$; the PMI subtracts it.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    pairs = [(ex.context, choice) for ex in examples for choice in ex.choices]
    summed = _summed_logprobs(model, pairs, batch_size)  # [n_pairs]
    if normalize == "pmi":
        if model.config.bos_token_id is None:
            raise ValueError("normalize='pmi' needs model.config.bos_token_id for the null context")
        summed = summed - _summed_logprobs(model, [([model.config.bos_token_id], y) for _, y in pairs], batch_size)
    scores, i = [], 0
    for ex in examples:
        k = len(ex.choices)
        z = {"token": [len(y) for y in ex.choices], "byte": [max(b, 1) for b in ex.choice_bytes]}
        z = z.get(normalize, [1] * k)  # "none" and "pmi" divide by nothing
        scores.append((summed[i : i + k] / np.array(z)).tolist())
        i += k
    return scores


def cloze_accuracy(
    model: Ministral3, examples: Sequence[ClozeExample], normalize: str = "none", batch_size: int = 32
) -> dict:
    r"""Cloze accuracy $\frac1N \sum_i [\,\arg\max_c s_{i,c} = \mathrm{label}_i\,]$, overall and per source.

    $s_{i,c}$ is the score of choice $c$ of item $i$ (``cloze_scores``).
    Chance is $\frac1N \sum_i 1/|\mathrm{choices}_i|$ (1/4 with four choices).
    """
    if not examples:
        raise ValueError("examples is empty")
    scores = cloze_scores(model, examples, normalize, batch_size)
    correct = [float(int(np.argmax(s)) == ex.label) for s, ex in zip(scores, examples, strict=True)]
    sources = [ex.source for ex in examples]
    counts = {src: sources.count(src) for src in sorted(set(sources))}
    return {
        "accuracy": float(np.mean(correct)),
        "n": len(examples),
        "chance": float(np.mean([1 / len(ex.choices) for ex in examples])),
        "normalize": normalize,
        "per_source": {src: {"accuracy": acc, "n": counts[src]} for src, acc in _mean_by(sources, correct).items()},
    }


# ----------------------------------------------------------------------------- the table


def task_table(
    models: Mapping[str, Ministral3 | Path],
    corpus: Corpus,
    n_math: int = 100,
    n_cloze: int = 200,
    *,
    eval_windows: int | None = 32,
    seq_len: int = 256,
    max_new_tokens: int = 256,
    context_tokens: int = 64,
    continuation_tokens: int = 16,
    choices: int = 4,
    cloze_normalize: str = "pmi",
    seed: int = 0,
    batch_size: int = 16,
    device=None,
) -> list[dict]:
    """Table 3's layout on held-out data: one row per evaluation, ``{"evaluation": name, <model>: value, ...}``.

    Rows: bits per byte per source (``eval_windows`` windows of ``seq_len`` per source; lower is
    better), math exact match on ``n_math`` problems (%), the teacher-forced solution log-prob per
    token and token accuracy (%), and cloze accuracy (%) on ``n_cloze`` items per prose source, scored
    with ``cloze_normalize`` (``"pmi"`` by default: on the tiny parent it separated the true continuation
    clearly better than the raw sum, see ``cloze_scores``). Every model sees the same windows, problems
    and items. A model given as a checkpoint directory is loaded on ``device`` only if its column is
    not cached (``evaluate.cache``).
    """
    if not models:
        raise ValueError("models is empty")
    spec = dict(
        n_math=n_math, n_cloze=n_cloze, eval_windows=eval_windows, seq_len=seq_len, max_new_tokens=max_new_tokens
    )
    spec |= dict(context_tokens=context_tokens, continuation_tokens=continuation_tokens, choices=choices)
    spec |= dict(cloze_normalize=cloze_normalize, seed=seed, corpus=corpus.key)  # what the column depends on

    def column(model: Ministral3) -> dict[str, float]:
        tokenizer = load_tokenizer(corpus.tokenizer_path.parent)
        nbytes = token_bytes(corpus.tokenizer, corpus.vocab_size)
        windows = validation_windows(corpus, seq_len, eval_windows)
        problems = math_problems(corpus.val_docs, n_math)
        items = cloze_examples(
            corpus.val_docs, tokenizer, n_cloze, context_tokens, continuation_tokens, choices=choices, seed=seed
        )
        col = {
            f"Bits per byte, {src} (lower is better)": model_score(model, w, nbytes).bits_per_byte
            for src, w in windows.items()
        }
        em = math_exact_match(model, tokenizer, problems, max_new_tokens, batch_size)
        lp = math_answer_logprob(model, tokenizer, problems, batch_size)
        col["Math exact match, greedy (%)"] = 100 * em["accuracy"]
        col["Math solution log-prob per token (nats)"] = lp["logprob_per_token"]
        col["Math solution token accuracy, teacher-forced (%)"] = 100 * lp["token_accuracy"]
        cloze = cloze_accuracy(model, items, cloze_normalize, batch_size)
        for src, r in cloze["per_source"].items():
            col[f"Cloze {choices}-way, {src} (%)"] = 100 * r["accuracy"]
        return col

    columns = {}
    for name, model in models.items():
        if isinstance(model, Ministral3):
            columns[name] = column(model)
        else:
            columns[name] = cached(model, "tasks", spec, lambda m=model: column(from_pretrained(m, device=device)))
    first = next(iter(columns.values()))
    return [{"evaluation": row, **{name: col[row] for name, col in columns.items()}} for row in first]


def format_task_table(rows: Sequence[Mapping]) -> str:
    """``task_table`` rows as text: evaluations down, models across, two decimals."""
    if not rows:
        raise ValueError("rows is empty")
    models = [k for k in rows[0] if k != "evaluation"]
    body = [(r["evaluation"], *(f"{r[m]:.2f}" for m in models)) for r in rows]
    return format_table([("evaluation", *models), *body])
