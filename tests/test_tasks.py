"""Task metrics: exact-match grading, greedy decoding, teacher-forced scores against a direct forward pass,
cloze items built from the text, and a model that memorised its data beating a random one on every metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict

from minimistral.arch.config import ModelConfig
from minimistral.arch.generate import generate
from minimistral.arch.model import Ministral3
from minimistral.data.corpus import Corpus, pack
from minimistral.data.math_problems import format_math, math_prompt
from minimistral.data.tokenizer import BOS_ID, EOS_ID, load_tokenizer, read_tokenizer_json, train_tokenizer
from minimistral.evaluate.loss import continuation_logprobs
from minimistral.evaluate.tasks import (
    ClozeExample,
    answer_is_complete,
    cloze_accuracy,
    cloze_examples,
    cloze_scores,
    format_task_table,
    grade_math,
    greedy_until,
    math_answer_logprob,
    math_exact_match,
    math_problems,
    task_table,
)

SONNET_18 = """Shall I compare thee to a summer's day?
Thou art more lovely and more temperate:
Rough winds do shake the darling buds of May,
And summer's lease hath all too short a date;
Sometime too hot the eye of heaven shines,
And often is his gold complexion dimm'd;
And every fair from fair sometime declines,
By chance or nature's changing course untrimm'd;
But thy eternal summer shall not fade,
Nor lose possession of that fair thou ow'st;
Nor shall Death brag thou wander'st in his shade,
When in eternal lines to time thou grow'st:
So long as men can breathe or eyes can see,
So long lives this, and this gives life to thee.
"""
SONNET_116 = """Let me not to the marriage of true minds
Admit impediments. Love is not love
Which alters when it alteration finds,
Or bends with the remover to remove.
O no! it is an ever-fixed mark
That looks on tempests and is never shaken;
It is the star to every wandering bark,
Whose worth's unknown, although his height be taken.
Love's not Time's fool, though rosy lips and cheeks
Within his bending sickle's compass come;
Love alters not with his brief hours and weeks,
But bears it out even to the edge of doom.
If this be error and upon me proved,
I never writ, nor no man ever loved.
"""
SUMS = [(2, 3), (7, 4), (6, 1), (8, 9)]
PROBLEMS = [
    {
        "text": format_math(f"{a} + {b} =", f"{a} + {b} = {a + b}", str(a + b)),
        "source": "math",
        "doc_id": f"math/validation/chain_sum/{i}",
        "task": "chain_sum",
        "question": f"{a} + {b} =",
        "answer": str(a + b),
    }
    for i, (a, b) in enumerate(SUMS)
]
PROSE = [
    {"text": SONNET_18, "source": "summer", "doc_id": "summer/18", "task": "", "question": "", "answer": ""},
    {"text": SONNET_116, "source": "minds", "doc_id": "minds/116", "task": "", "question": "", "answer": ""},
]
VAL = Dataset.from_list(PROSE + PROBLEMS)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: extra threads only add synchronisation, which is slow on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    train_tokenizer([SONNET_18, SONNET_116, *(p["text"] for p in PROBLEMS)], vocab_size=400).save(
        str(path / "tokenizer.json")
    )
    return path


@pytest.fixture(scope="module")
def tok(tok_dir):
    return load_tokenizer(tok_dir)


def tiny_config(vocab: int) -> ModelConfig:
    return ModelConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        yarn_factor=None,
        original_max_position_embeddings=None,
        llama_4_scaling_beta=None,
    )


def random_model(vocab: int, seed: int = 0, std: float = 0.02) -> Ministral3:
    torch.manual_seed(seed)
    model = Ministral3(tiny_config(vocab)).eval()
    model.init_weights(std)
    return model


@pytest.fixture(scope="module")
def memorised(tok):
    """A tiny model trained on random windows of the packed validation texts until it knows them by heart."""
    stream = pack([tok.encode(d["text"], bos=False) for d in PROSE + PROBLEMS], BOS_ID, EOS_ID)
    stream = torch.from_numpy(stream.astype(np.int64))
    model = random_model(400)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        starts = torch.randint(0, len(stream) - 49, (16,), generator=gen).tolist()
        w = torch.stack([stream[s : s + 49] for s in starts])  # [16, 49]
        loss = F.cross_entropy(model(w[:, :-1]).flatten(0, 1), w[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5, f"memorisation did not converge (loss {loss.item():.3f})"
    return model.eval()


# ----------------------------------------------------------------------------- math grading


@pytest.mark.parametrize(
    ("continuation", "predicted", "correct"),
    [
        (" 4 + 5 = 9\n9 + 3 = 12\nAnswer: 12", "12", True),
        (" 4 + 5 = 9\nAnswer: 12\nQuestion: 1 + 1 =\nSolution: 2\nAnswer: 2", "12", True),  # the first line counts
        (" 4 + 5 = 9\nAnswer: 9\nAnswer: 12", "9", False),
        ("Answer:12   ", "12", True),
        (" x\nAnswer: 12.0", "12.0", False),  # strict string match, no numeric normalisation
        (" the answer is 12", None, False),
        (" text Answer: 12", None, False),  # only at the start of a line
        ("\nAnswer: ", "", False),
    ],
)
def test_grade_math_on_hand_made_generations(continuation, predicted, correct):
    assert grade_math(continuation, " 12 ") == (predicted, correct)


def test_answer_is_complete_needs_the_newline():
    assert not answer_is_complete(" 2 + 3 = 5\nAnswer: 5")  # "5" may still become "55"
    assert answer_is_complete(" 2 + 3 = 5\nAnswer: 5\n")
    assert not answer_is_complete(" no answer line\n")


def test_math_problems_are_the_math_rows_in_order():
    got = math_problems(VAL, 3)
    assert [p["doc_id"] for p in got] == [p["doc_id"] for p in PROBLEMS[:3]]
    with pytest.raises(ValueError, match="n must be"):
        math_problems(VAL, 5)


# ----------------------------------------------------------------------------- greedy decoding


def test_greedy_until_matches_generate_and_stops_per_row():
    model = random_model(64, std=0.3)
    prompts = torch.tensor([[1, 5, 9, 13], [1, 7, 7, 2]])  # [2, 4]
    reference = generate(model, prompts, 12)[:, 4:].tolist()  # greedy, no stopping
    assert greedy_until(model, prompts, 12, stop=lambda ids: False) == reference
    assert greedy_until(model, prompts, 12, stop=lambda ids: len(ids) == 3) == [r[:3] for r in reference]
    # EOS ends a row (and is left out) while the other keeps going
    eos = reference[0][2]
    got = greedy_until(model, prompts, 12, stop=lambda ids: False, eos_token_id=eos)
    expect = [r[: r.index(eos)] if eos in r else r for r in reference]
    assert got == expect
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_until(model, prompts, 0, stop=lambda ids: False)


def reference_exact_match(model, tok, problems) -> list[bool]:
    """One problem at a time with ``generate``: cut at EOS, grade the text."""
    out = []
    for p in problems:
        ids = torch.tensor([tok.encode(math_prompt(p["question"]))])
        new = generate(model, ids, 40, eos_token_id=tok.eos_id)[0, ids.shape[1] :].tolist()
        new = new[: new.index(tok.eos_id)] if tok.eos_id in new else new
        out.append(grade_math(tok.decode(new), p["answer"])[1])
    return out


def test_math_exact_match_agrees_with_one_by_one_generation(memorised, tok):
    expect = reference_exact_match(memorised, tok, PROBLEMS)
    assert sum(expect) >= 2, "the memorised model should solve most of its problems"
    for batch_size in (1, 4):
        got = math_exact_match(memorised, tok, PROBLEMS, max_new_tokens=40, batch_size=batch_size, n_examples=4)
        assert got["accuracy"] == pytest.approx(np.mean(expect)) and got["n"] == 4
        assert [e["correct"] for e in got["examples"]] == expect
        assert got["per_task"] == {"chain_sum": pytest.approx(np.mean(expect))}
    wrong = [{**p, "answer": str(int(p["answer"]) + 1)} for p in PROBLEMS]
    assert math_exact_match(memorised, tok, wrong, max_new_tokens=40)["accuracy"] == 0.0
    assert math_exact_match(random_model(400), tok, PROBLEMS, max_new_tokens=20)["accuracy"] == 0.0


# ----------------------------------------------------------------------------- teacher-forced scores


def test_continuation_logprobs_equal_a_direct_forward_pass():
    model = random_model(64, seed=1, std=0.3)
    gen = torch.Generator().manual_seed(0)
    pairs = [
        (torch.randint(0, 64, (c,), generator=gen).tolist(), torch.randint(0, 64, (k,), generator=gen).tolist())
        for c, k in [(5, 3), (1, 7), (9, 1), (3, 4), (6, 6)]
    ]
    got = continuation_logprobs(model, pairs, batch_size=2)  # batches of mixed lengths: right padding
    for (x, y), (logp, hit) in zip(pairs, got, strict=True):
        ids = torch.tensor([x + y])  # [1, c + k]
        with torch.no_grad():
            logits = model(ids[:, :-1])[0, len(x) - 1 :]  # [k, vocab]: the positions that predict y
        expect = F.log_softmax(logits, -1).gather(-1, torch.tensor(y)[:, None])[:, 0]  # [k]
        torch.testing.assert_close(logp, expect, atol=1e-5, rtol=1e-5)
        assert hit.tolist() == (logits.argmax(-1) == torch.tensor(y)).tolist()
    with pytest.raises(ValueError, match="at least one token"):
        continuation_logprobs(model, [([], [1])])


def direct_logprob(model: Ministral3, x: list[int], y: list[int]) -> float:
    """log p(y | x) from one forward pass of the unpadded sequence, log_softmax and gather."""
    with torch.no_grad():
        logits = model(torch.tensor([x + y[:-1]]))[0, len(x) - 1 :]  # [|y|, vocab]
    return F.log_softmax(logits, -1).gather(-1, torch.tensor(y)[:, None]).sum().item()


def test_cloze_scores_and_accuracy_by_hand():
    model = random_model(64, seed=2, std=0.3)
    examples = [
        ClozeExample("a", [3, 4, 5], [[6, 7], [8, 9, 10], [11]], label=1, choice_bytes=[5, 2, 9]),
        ClozeExample("b", [12, 13], [[14], [15]], label=0, choice_bytes=[1, 4]),
    ]
    raw = [[direct_logprob(model, e.context, y) for y in e.choices] for e in examples]
    null = [[direct_logprob(model, [BOS_ID], y) for y in e.choices] for e in examples]  # <s> as the null context
    by_hand = {"none": raw, "pmi": [np.subtract(r, u).tolist() for r, u in zip(raw, null, strict=True)]}
    by_hand["token"] = [np.divide(r, [len(y) for y in e.choices]).tolist() for r, e in zip(raw, examples, strict=True)]
    by_hand["byte"] = [np.divide(r, e.choice_bytes).tolist() for r, e in zip(raw, examples, strict=True)]
    for normalize, expect in by_hand.items():
        got = cloze_scores(model, examples, normalize, batch_size=3)
        for g, x in zip(got, expect, strict=True):
            assert g == pytest.approx(x, abs=1e-5)
        right = [int(np.argmax(x)) == e.label for x, e in zip(expect, examples, strict=True)]
        acc = cloze_accuracy(model, examples, normalize)
        assert acc["accuracy"] == pytest.approx(np.mean(right))
        assert acc["per_source"] == {"a": {"accuracy": right[0], "n": 1}, "b": {"accuracy": right[1], "n": 1}}
        assert acc["chance"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert len({tuple(np.argsort(x[0])) for x in by_hand.values()}) > 1  # the normalisations rank differently
    with pytest.raises(ValueError, match="normalize"):
        cloze_scores(model, examples, "chars")


def test_math_answer_logprob_scores_the_completion_only(tok):
    model = random_model(400, seed=3, std=0.3)
    got = math_answer_logprob(model, tok, PROBLEMS[:2])
    by_hand, hits, n = 0.0, 0, 0
    for p in PROBLEMS[:2]:
        prompt = tok.encode(math_prompt(p["question"]))
        completion = [*tok.encode(p["text"][len(math_prompt(p["question"])) :], bos=False), tok.eos_id]
        assert prompt + completion[:-1] == tok.encode(p["text"])  # the split does not change the tokens
        ids = torch.tensor([prompt + completion])
        with torch.no_grad():
            logits = model(ids[:, :-1])[0, len(prompt) - 1 :]  # [k, vocab]
        by_hand += F.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None]).sum().item()
        hits += (logits.argmax(-1) == torch.tensor(completion)).sum().item()
        n += len(completion)
    assert got["tokens"] == n
    assert got["logprob_per_token"] == pytest.approx(by_hand / n, abs=1e-5)
    assert got["token_accuracy"] == pytest.approx(hits / n)
    with pytest.raises(ValueError, match="does not start with its prompt"):
        math_answer_logprob(model, tok, [{**PROBLEMS[0], "question": "3 + 3 ="}])


# ----------------------------------------------------------------------------- cloze items


def test_cloze_examples_are_deterministic_and_well_formed(tok):
    items = cloze_examples(VAL, tok, n=10, context_tokens=12, continuation_tokens=5, choices=4, seed=7)
    again = cloze_examples(VAL, tok, n=10, context_tokens=12, continuation_tokens=5, choices=4, seed=7)
    other = cloze_examples(VAL, tok, n=10, context_tokens=12, continuation_tokens=5, choices=4, seed=8)
    assert items == again and items != other
    assert [e.source for e in items] == ["minds"] * 10 + ["summer"] * 10  # prose only, sorted; math left out
    texts = {d["source"]: d["text"] for d in PROSE}
    for e in items:
        doc = tok.encode(texts[e.source], bos=False)
        truth = e.choices[e.label]
        assert len(e.context) == 12 and all(len(c) == 5 for c in e.choices) and len(e.choices) == 4
        # the true continuation is what follows the context in the document
        spans = [doc[i : i + 17] for i in range(len(doc) - 16)]
        assert e.context + truth in spans
        start = spans.index(e.context + truth)
        for j, choice in enumerate(e.choices):
            assert tok.decode(choice)[0].isspace()  # every choice starts a word
            assert e.choice_bytes[j] == len(tok.decode(choice).encode())
            if j == e.label:
                continue
            assert choice != truth and e.choices.count(choice) == 1
            at = [i for i in range(len(doc) - 4) if doc[i : i + 5] == choice]  # a span of the same source
            assert any(i + 5 <= start or i >= start + 17 for i in at)  # from away from the passage
    assert len({e.label for e in items}) > 1


def test_cloze_examples_reject_bad_input(tok):
    with pytest.raises(ValueError, match="n=1000"):
        cloze_examples(VAL, tok, n=1000, context_tokens=12, continuation_tokens=5)
    with pytest.raises(ValueError, match="choices"):
        cloze_examples(VAL, tok, n=2, choices=1)
    with pytest.raises(ValueError, match="context_tokens"):
        cloze_examples(VAL, tok, n=2, context_tokens=0)
    with pytest.raises(ValueError, match="'poems'"):
        cloze_examples(VAL, tok, n=2, context_tokens=12, continuation_tokens=5, sources=["poems"])


def test_memorised_model_picks_the_true_continuation(memorised, tok):
    items = cloze_examples(VAL, tok, n=20, context_tokens=12, continuation_tokens=6, seed=0)
    assert cloze_accuracy(memorised, items)["accuracy"] >= 0.9
    assert cloze_accuracy(random_model(400), items)["accuracy"] <= 0.6  # chance is 0.25


# ----------------------------------------------------------------------------- the table


def tiny_corpus(tok_dir, tok) -> Corpus:
    val = {
        s: pack([tok.encode(d["text"], bos=False) for d in PROSE + PROBLEMS if d["source"] == s], BOS_ID, EOS_ID)
        for s in ("summer", "minds", "math")
    }
    return Corpus(
        tokenizer=read_tokenizer_json(tok_dir / "tokenizer.json"),
        tokenizer_path=tok_dir / "tokenizer.json",
        train=np.zeros(0, np.int32),
        val=val,
        val_bytes={},
        docs=DatasetDict(train=VAL, validation=VAL),
        report=[],
        tokenizer_stats={},
    )


def test_task_table_layout_and_the_memorised_model_wins(memorised, tok_dir, tok):
    corpus = tiny_corpus(tok_dir, tok)
    models = {"memorised": memorised, "random": random_model(400)}
    rows = task_table(
        models, corpus, n_math=4, n_cloze=10, eval_windows=2, seq_len=32, max_new_tokens=24,
        context_tokens=12, continuation_tokens=6,
    )  # fmt: skip
    names = [r["evaluation"] for r in rows]
    assert names[:3] == [f"Bits per byte, {s} (lower is better)" for s in ("summer", "minds", "math")]
    assert "Math exact match, greedy (%)" in names and "Cloze 4-way, minds (%)" in names
    for r in rows:
        assert set(r) == {"evaluation", "memorised", "random"}
        lower = "lower is better" in r["evaluation"]
        assert (r["memorised"] < r["random"]) if lower else (r["memorised"] > r["random"]), r
    text = format_task_table(rows)
    assert text.splitlines()[0].split() == ["evaluation", "memorised", "random"]
    assert len(text.splitlines()) == len(rows) + 2
