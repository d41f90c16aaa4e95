"""Post-training's closed forms: GRPO's group advantages and clipped objective (values and fp64 gradients),
and the chat format, token by token."""

import json
import math
from dataclasses import replace

import pytest
import torch
from conftest import tiny_checkpoints

from minimistral.data.corpus import build_corpus
from minimistral.data.tokenizer import load_tokenizer
from minimistral.posttrain import (
    encode_chat,
    encode_prompt,
    group_advantages,
    grpo_loss,
    judged_answer,
    split_response,
    token_names,
)
from minimistral.posttrain.chat import END_INST, END_SYSTEM, END_THINK, INST, SYSTEM, THINK
from minimistral.posttrain.rollouts import Rollout, pass_at_k, repetition, sample
from minimistral.posttrain.sft import ChatExamples, sft
from minimistral.posttrain.study import grade, held_out_scores, summarize
from minimistral.posttrain.tasks import STEM_TASKS, problems, reward, stem_split
from minimistral.scales import get_scale
from minimistral.train import read_metrics


# ----------------------------------------------------------------------------- group advantages
def test_group_advantages_closed_form():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0, 0.0, 3.0, 0.0, 0.0])
    a = group_advantages(rewards, 4)
    s = math.sqrt(4 * 0.25 / 3)  # unbiased std of (1, 0, 0, 1)
    want = [0.5 / (s + 1e-4), -0.5 / (s + 1e-4)] * 2
    assert torch.allclose(a[:4], torch.tensor([want[0], want[1], want[1], want[0]]))
    assert torch.equal(a[4:8], torch.zeros(4))  # equal rewards: no signal
    s3 = math.sqrt((3 * 0.75**2 + 2.25**2) / 3)  # (0, 3, 0, 0): mean 0.75
    assert torch.allclose(a[8:], torch.tensor([-0.75, 2.25, -0.75, -0.75]) / (s3 + 1e-4))
    assert torch.allclose(a.view(3, 4).sum(-1), torch.zeros(3), atol=1e-6)


def test_group_advantages_reject_bad_groups():
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(torch.ones(4), 1)
    with pytest.raises(ValueError, match="multiple of group_size=4"):
        group_advantages(torch.ones(6), 4)


# ----------------------------------------------------------------------------- the GRPO loss
def _loss_inputs(ratios, advantages, mask, dtype=torch.float64):
    old = torch.log(torch.rand(len(ratios), len(ratios[0]), dtype=dtype, generator=torch.Generator().manual_seed(0)))
    logp = (old + torch.log(torch.tensor(ratios, dtype=dtype))).requires_grad_()
    return logp, old, torch.tensor(advantages, dtype=dtype), torch.tensor(mask, dtype=torch.bool)


def test_grpo_loss_on_policy_is_minus_the_token_mean_of_advantages():
    logp, old, a, mask = _loss_inputs([[1, 1, 1], [1, 1, 1]], [1.0, -0.5], [[1, 1, 0], [1, 0, 0]])
    loss = grpo_loss(logp, old, a, mask)
    assert loss.item() == pytest.approx((-1 - 1 + 0.5) / 3)  # token-level: 3 response tokens
    loss.backward()  # d/dlogp of -rho * A is -rho * A / N, 0 off the mask
    want = torch.tensor([[-1 / 3, -1 / 3, 0], [0.5 / 3, 0, 0]], dtype=torch.float64)
    assert torch.allclose(logp.grad, want)


def test_grpo_loss_clips_the_ratio_only_where_it_would_help():
    # rho = 1.5 and 0.5 against A = +1 and -1: per token -min(rho A, clip(rho, 0.8, 1.2) A)
    logp, old, a, mask = _loss_inputs([[1.5, 0.5], [1.5, 0.5]], [1.0, -1.0], [[1, 1], [1, 1]])
    loss = grpo_loss(logp, old, a, mask, clip_eps=0.2)
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 1.5 + 0.8) / 4)
    loss.backward()  # the clipped terms (A > 0, rho > 1.2) and (A < 0, rho < 0.8) have no gradient
    want = torch.tensor([[0, -0.5 / 4], [1.5 / 4, 0]], dtype=torch.float64)
    assert torch.allclose(logp.grad, want)


def test_grpo_loss_kl_term_is_k3():
    logp, old, a, mask = _loss_inputs([[1, 1]], [0.0], [[1, 1]])
    ref = logp.detach() + torch.tensor([[0.0, 0.3]], dtype=torch.float64)  # ref - logp = (0, 0.3)
    loss = grpo_loss(logp, old, a, mask, ref_logp=ref, kl_coef=0.1)
    assert loss.item() == pytest.approx(0.1 * (math.exp(0.3) - 0.3 - 1) / 2)
    loss.backward()  # d/dlogp (e^(q - l) - (q - l) - 1) = 1 - e^(q - l)
    assert torch.allclose(logp.grad, torch.tensor([[0.0, 0.1 * (1 - math.exp(0.3)) / 2]], dtype=torch.float64))
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(logp, old, a, mask, kl_coef=0.1)


def test_grpo_loss_gradcheck_fp64():
    g = torch.Generator().manual_seed(1)
    old = -torch.rand(3, 5, dtype=torch.float64, generator=g) * 3
    logp = (old + 0.05 * torch.randn(3, 5, dtype=torch.float64, generator=g)).requires_grad_()  # inside the clip
    ref = old - 0.1 * torch.rand(3, 5, dtype=torch.float64, generator=g)
    a = torch.randn(3, dtype=torch.float64, generator=g)
    mask = torch.rand(3, 5, generator=g) > 0.3
    assert torch.autograd.gradcheck(lambda lp: grpo_loss(lp, old, a, mask, 0.2, ref, 0.05), (logp,))


def test_grpo_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), torch.ones(2, 3))


# ----------------------------------------------------------------------------- the chat format
@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    (d / "tokenizer.json").write_bytes(build_corpus().tokenizer_path.read_bytes())
    return load_tokenizer(d)


def test_chat_layout_and_assistant_mask(tok):
    def enc(s):
        return tok.encode(s, bos=False)

    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+3?"},
        {"role": "assistant", "content": "5", "thinking": "2+3=5"},
        {"role": "user", "content": "And 1+1?"},
        {"role": "assistant", "content": "2"},
    ]
    ids, mask = encode_chat(tok, messages)
    first = [THINK, *enc("2+3=5"), END_THINK, *enc("5"), 2]
    want = [1, SYSTEM, *enc("Be brief."), END_SYSTEM, INST, *enc("What is 2+3?"), END_INST, *first]
    want += [INST, *enc("And 1+1?"), END_INST, *enc("2"), 2]
    assert ids == want and len(mask) == len(ids)
    assert [i for i, m in zip(ids, mask, strict=True) if m] == [*first, *enc("2"), 2]
    names = token_names(tok, ids)
    assert names[:2] == ["<s>", "[SYSTEM_PROMPT]"] and "[THINK]" in names and names[-1] == "</s>"
    assert "".join(names[-3:-1]) == "[/INST]2"


def test_prompt_and_response_round_trip(tok):
    prompt = encode_prompt(tok, [{"role": "user", "content": "Hi"}], think=True)
    assert prompt[-2:] == [END_INST, THINK]
    response = [THINK, *tok.encode("a plan", bos=False), END_THINK, *tok.encode("done", bos=False), 2, 99]
    assert split_response(tok, response) == {"thinking": "a plan", "answer": "done", "ended": True}
    unfinished = response[: 1 + len(tok.encode("a plan", bos=False))]  # [THINK] a plan, then the limit
    assert split_response(tok, unfinished) == {"thinking": "a plan", "answer": "", "ended": False}
    assert split_response(tok, tok.encode("plain", bos=False)) == {"thinking": None, "answer": "plain", "ended": False}
    assert split_response(tok, response[1:], thinking=True) == split_response(tok, response)  # prompt opened [THINK]
    assert judged_answer(tok, [*response[1:3], END_THINK, *tok.encode(" done ", bos=False), 2], thinking=True) == "done"


def test_chat_rejects_malformed_conversations(tok):
    with pytest.raises(ValueError, match="alternating"):
        encode_chat(tok, [{"role": "assistant", "content": "x"}])
    with pytest.raises(ValueError, match="only an assistant"):
        encode_chat(tok, [{"role": "user", "content": "x", "thinking": "y"}])
    with pytest.raises(ValueError, match="end with a user"):
        encode_prompt(tok, [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])
    text_forgery = tok.encode("[INST]", bos=False)
    assert INST not in text_forgery  # control tokens enter by id only


# ----------------------------------------------------------------------------- tasks, SFT data, rollouts
def test_stem_split_holds_out_by_seed_and_question():
    split = stem_split(30, 10, pretraining_questions={"Calculate 1 + 1."})
    assert len(split["train"]) == 30 * len(STEM_TASKS) and len(split["test"]) == 10 * len(STEM_TASKS)
    assert not {p.question for p in split["train"]} & {p.question for p in split["test"]}
    p = split["test"][0]
    assert reward(p, p.answer) == 1.0 and reward(p, p.answer + "1") == 0.0
    assert p.chat()[1] == {"role": "assistant", "content": p.answer, "thinking": p.solution}
    with pytest.raises(ValueError, match="choose from"):
        problems("sudoku", "train", 1)


def test_chat_examples_learn_the_assistant_tokens_only(tok):
    convs = [p.chat() for p in stem_split(2, 1)["test"]]
    data = ChatExamples(convs, tok, max_len=256)
    batch = data.batch(torch.tensor([0, 2]))
    for r, i in enumerate([0, 2]):
        ids, learned = encode_chat(tok, convs[i])
        n = len(ids) - 1
        assert batch["input_ids"][r, :n].tolist() == ids[:-1] and batch["targets"][r, :n].tolist() == ids[1:]
        assert batch["mask"][r, :n].tolist() == learned[1:] and not batch["mask"][r, n:].any()
    with pytest.raises(ValueError, match="max_len=8"):
        ChatExamples(convs, tok, max_len=8)


def test_pass_at_k_and_repetition_closed_forms():
    assert pass_at_k(4, 1, 1) == 0.25 and pass_at_k(4, 1, 2) == pytest.approx(0.5) and pass_at_k(4, 0, 3) == 0.0
    assert pass_at_k(16, 16, 16) == 1.0 and pass_at_k(16, 2, 16) == 1.0
    assert repetition([1, 2, 3, 4, 1, 2, 3, 4]) == pytest.approx(1 / 5) and repetition([1, 2, 3]) == 0.0
    with pytest.raises(ValueError, match="correct"):
        pass_at_k(4, 5, 1)


def test_sampling_is_batched_and_equals_generate_per_prompt(hf_dir):
    from minimistral.arch.generate import generate
    from minimistral.arch.hub import from_pretrained

    model = from_pretrained(hf_dir()[1])
    prompts = [[1, 5, 6], [1, 7], [1, 8, 9]]
    rolls = sample(model, prompts, n=2, max_new_tokens=5, temperature=0.0)
    assert [r.prompt for r in rolls] == [0, 0, 1, 1, 2, 2]
    for r in rolls:
        alone = generate(model, torch.tensor([prompts[r.prompt]]), 5, eos_token_id=2)[0, len(prompts[r.prompt]) :]
        want = alone.tolist()
        assert r.ids == (want[: want.index(2) + 1] if 2 in want else want)
    hot = sample(model, prompts, n=4, max_new_tokens=5, temperature=1.0, seed=3)
    assert hot == sample(model, prompts, n=4, max_new_tokens=5, temperature=1.0, seed=3)  # seeded
    assert hot != sample(model, prompts, n=4, max_new_tokens=5, temperature=1.0, seed=4)
    # each rollout is seeded on its own: the batch size does not change it, and a process that samples the
    # last prompt as rows 8.. of the whole batch draws what one process did
    assert hot == sample(model, prompts, n=4, max_new_tokens=5, temperature=1.0, seed=3, batch_size=3)
    tail = sample(model, prompts[2:], n=4, max_new_tokens=5, temperature=1.0, seed=3, first_row=8)
    assert [r.ids for r in tail] == [r.ids for r in hot[8:]]


def test_sft_trains_on_responses_with_a_teacher_and_grades_answers(tmp_path, tok):
    from minimistral.arch.hub import from_pretrained
    from minimistral.train import TrainConfig

    dirs = tiny_checkpoints(tmp_path, teacher=2, student=1)
    split = stem_split(8, 2)
    data = ChatExamples([p.chat() for p in split["train"]], tok, 256)
    cfg = TrainConfig(steps=2, batch_size=4, lr=1e-3, warmup_steps=1, eval_every=10, ckpt_every=1)
    ck = sft(dirs["student"], data, tmp_path / "sft", cfg, teacher=dirs["teacher"])
    log = [json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert "kl" in log[0] and (ck / "tokenizer.json").is_file()
    model = from_pretrained(ck)
    rows = held_out_scores(model, tok, split["test"], samples=2, max_new_tokens=4, temperature=1.0)
    assert len(rows) == len(split["test"]) and all(0 <= r["correct"] <= 2 and r["length"] <= 4 for r in rows)
    assert {s["task"] for s in summarize(rows, 2)} == {*STEM_TASKS, "stem"}
    p = split["test"][0]
    right = Rollout(0, [*tok.encode("work", bos=False), END_THINK, *tok.encode(p.answer, bos=False), 2])
    assert grade(tok, p, right) == 1.0 and grade(tok, p, Rollout(0, right.ids[:-1])) == 0.0  # no </s>: 0


# ----------------------------------------------------------------------------- the GRPO loop
def _policy(tmp_path, seed=0):
    from minimistral.arch.config import TINY_CONFIGS
    from minimistral.arch.model import Ministral3

    torch.manual_seed(seed)
    return Ministral3(TINY_CONFIGS["tiny-3b"].replace(num_hidden_layers=1))


def _low(i, rollout):
    """A reward a random policy can climb: the share of the response's ids below 2000."""
    return sum(t < 2000 for t in rollout.ids) / max(1, len(rollout.ids))


def _grpo(tmp_path, steps, name="rl", lr=1e-2, reward=_low, **rl):
    from minimistral.posttrain.grpo import GRPOTrainer, Prompts, RLConfig
    from minimistral.train import TrainConfig

    prompts = Prompts([[1, 3, 100 + i, 4] for i in range(6)] + [[1, 3, 7, 8, 4]] * 2)
    cfg = TrainConfig(steps=steps, batch_size=4, lr=lr, min_lr=lr, warmup_steps=1, ckpt_every=1, log_every=1)
    rlc = RLConfig(**({"group_size": 4, "max_new_tokens": 6, "inner_steps": 2} | rl))
    return GRPOTrainer(_policy(tmp_path), cfg, rlc, prompts, reward, tmp_path / name, device="cpu")


def test_grpo_raises_the_reward_it_is_given(tmp_path):
    trainer = _grpo(tmp_path, steps=12)
    log = trainer.fit()
    rewards = [r["reward"] for r in log if "reward" in r]
    assert len(rewards) == 12 and {"no_signal", "length", "truncated", "clipped"} <= set(log[0])
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.15, rewards


def test_grpo_resumes_bitwise_between_iterations(tmp_path):
    from minimistral.train import ResumeError

    straight = _grpo(tmp_path, steps=3, name="a")
    straight.fit()
    calls = []

    def interrupting(i, rollout):  # Ctrl-C during the second iteration's rollouts (16 per iteration)
        calls.append(i)
        if len(calls) == 20:
            raise KeyboardInterrupt
        return _low(i, rollout)

    with pytest.raises(KeyboardInterrupt):
        _grpo(tmp_path, steps=3, name="b", reward=interrupting).fit()
    resumed = _grpo(tmp_path, steps=3, name="b")
    resumed.fit()
    assert [r["step"] for r in resumed.metrics() if "reward" in r] == [1, 2, 3]
    for (name, p), q in zip(straight.model.named_parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q), name
    with pytest.raises(ResumeError, match="RL config"):
        _grpo(tmp_path, steps=3, name="b", group_size=2).fit()


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_inside_a_grpo_iteration_lands_after_it(tmp_path, monkeypatch, sig):
    """Ctrl-C or SIGTERM during the second iteration's first optimizer step is held until both of its steps are
    done and the iteration is logged: the checkpoint holds two whole iterations, and the resumed run is bitwise
    the uninterrupted one. (Before, the held Ctrl-C was raised before the step was counted: a checkpoint of
    step 1 holding iteration 2's weights.)"""
    import os
    import signal

    import minimistral.posttrain.grpo as grpo

    straight = _grpo(tmp_path, steps=3, name="a")
    straight.fit()
    losses, loss = [], grpo.grpo_loss

    def signalled(*args, **kw):
        losses.append(1)
        if len(losses) == 3:  # iteration 2, inner step 1 of 2
            os.kill(os.getpid(), getattr(signal, sig))
        return loss(*args, **kw)

    monkeypatch.setattr(grpo, "grpo_loss", signalled)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even if this job ignores it
    try:
        with pytest.raises(KeyboardInterrupt):
            _grpo(tmp_path, steps=3, name="b").fit()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(losses) == 4  # the iteration finished its second step before stopping
    state = json.loads((tmp_path / "b" / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 2 and [r["step"] for r in read_metrics(tmp_path / "b") if "reward" in r] == [1, 2]
    monkeypatch.undo()
    resumed = _grpo(tmp_path, steps=3, name="b")
    resumed.fit()
    for (name, p), q in zip(straight.model.named_parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q), name


# ----------------------------------------------------------------------------- General RL's rubric prompts
def test_rubric_prompts_are_held_out_by_question_and_references_meet_them():
    from minimistral.posttrain.rubrics import ITEM, chatterbot_pairs, meet, rubric_prompts, rubric_score

    assert len(chatterbot_pairs()) == 897  # distinct English pairs of chatterbot-corpus 1.3.3
    train, test = rubric_prompts("train", 300), rubric_prompts("test", 60)
    assert not {p.question for p in train} & {p.question for p in test}
    assert all(rubric_score(p.items, p.reference) == 1.0 for p in train + test)
    assert rubric_prompts("test", 10) == test[:10]  # a prefix: the same prompts on every machine
    p = test[0]
    assert p.prompt.startswith(p.question + "\n") and all(ITEM[n].instruction in p.prompt for n in p.items)
    items = ("exclaim", "max_words_5")
    assert rubric_score(items, "one two three!") == 1.0 and rubric_score(items, "one two three four five six") == 0
    assert rubric_score(items, "one two.") == 0.5
    assert meet(("include_yes", "max_words_5"), "a b c d e f g") == "a b c d yes"


def test_reasoning_recipe_runs_each_step_once_at_ci_scale(tmp_path, tok):
    from minimistral.arch.hub import from_pretrained
    from minimistral.posttrain.pipeline import posttrain_data, rl_stage, sft_child, teach

    dirs = tiny_checkpoints(tmp_path, parent=2, child=1)
    data = posttrain_data(str(dirs["parent"]), "ci")
    assert posttrain_data(str(dirs["child"]), "ci") is data  # one tokenizer, one build
    assert len(data.sft) == 16 * len(STEM_TASKS) + 16 and len(data.val) == 2 * len(STEM_TASKS) + 4
    teacher = teach(dirs["parent"], tmp_path / "teacher", "ci")
    child = sft_child(dirs["child"], teacher, tmp_path / "sft", "ci")
    stem = rl_stage(child, tmp_path / "stem", "ci", "stem")
    ci = get_scale("ci")
    with_kl = replace(ci, posttrain=replace(ci.posttrain, kl_coef=0.1, temperature=0.7))  # anchored to the SFT model
    anchored = rl_stage(child, tmp_path / "stem-kl", with_kl, "stem")
    state = json.loads((anchored / "trainer_state.json").read_text())
    assert state["rl_config"]["kl_coef"] == 0.1 and state["rl_config"]["temperature"] == 0.7
    general = rl_stage(stem, tmp_path / "general", "ci", "general")
    log = [json.loads(line) for line in (tmp_path / "general" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "reward" in r] == [1, 2] and all(r["length"] <= 12 for r in log if "length" in r)
    mtime = (general / "model.safetensors").stat().st_mtime_ns
    assert rl_stage(stem, tmp_path / "general", "ci", "general") == general  # done: returns at once
    assert (general / "model.safetensors").stat().st_mtime_ns == mtime
    assert from_pretrained(general).config.num_hidden_layers == 1


def test_bootstrap_interval_of_a_paired_gain():
    from minimistral.posttrain.study import bootstrap_ci

    assert bootstrap_ci([0.2, 0.5, 0.1], [0.3, 0.6, 0.2]) == pytest.approx((0.1, 0.1, 0.1))
    mean, lo, hi = bootstrap_ci([0.0] * 50, [1.0] * 10 + [0.0] * 40)
    assert mean == pytest.approx(0.2) and 0.05 < lo < 0.2 < hi < 0.35
    with pytest.raises(ValueError, match="equally long"):
        bootstrap_ci([1.0], [])


def test_posttrain_study_tables_at_ci_scale(tmp_path, tok, monkeypatch):
    import shutil

    from minimistral.posttrain import study

    monkeypatch.setattr(study, "results_dir", lambda scale: tmp_path / "results")
    one = tiny_checkpoints(tmp_path, one=1)["one"]
    root = tmp_path / "root"
    for model in ("tiny-24b", *study.CHILD_MODELS):
        for stage in study.STAGES:
            if not study.stage_checkpoint(root, model, stage).exists():
                shutil.copytree(one, study.stage_checkpoint(root, model, stage))
    tables = study.run_posttrain_study(root, "ci")
    stages = {(r["model"], r["stage"]) for r in tables["posttrain_scores"]}
    assert len(stages) == 1 + 3 * 4 + 1 and ("tiny-3b", "sft, next-token loss") in stages
    assert {r["task"] for r in tables["posttrain_scores"]} == {*STEM_TASKS, "rubric", "stem"}
    assert len(tables["posttrain_gains"]) == 3 * 4 and all(
        r["ci_low"] <= r["gain"] <= r["ci_high"] for r in tables["posttrain_gains"]
    )
    assert [r["limit"] for r in tables["posttrain_limits"]] == [8, 12] * 3
    assert (tmp_path / "results" / "posttrain_scores.csv").is_file()
    rows = study.table5(tables["posttrain_scores"], "pass@2")
    assert [r["task"] for r in rows] == [*STEM_TASKS, "stem"] and list(rows[0])[1:] == list(study.CHILD_MODELS)
    assert study.rl_curves(root) == {child: {"stem": [], "general": []} for child in study.CHILD_MODELS}


def test_posttrain_figures_and_rendered_chat(tok):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from minimistral.show import posttrain as sp

    ids, learned = encode_chat(tok, problems("chain_sum", "test", 1)[0].chat())
    text = sp.rendered_chat(tok, ids, learned, width=40)
    assert text.startswith("<s>|[INST]|") and "«[THINK]»|" in text and text.endswith("«</s>»|")
    assert all(len(line) <= 40 for line in text.splitlines())
    rows = [{"model": m, "stage": st, "task": t, "pass@1": "0.1", "reward": "0.5", "length": "20"}
            for m in ("tiny-14b", "tiny-3b") for st in ("sft", "general-rl") for t in ("stem", "rubric")]  # fmt: skip
    curves = {"tiny-3b": {"stem": [{"step": 1, "reward": 0.1, "no_signal": 0.5, "length": 20}], "general": []}}
    figs = [sp.plot_clipped_objective(), sp.plot_rl_curves(curves),
            sp.plot_stage_scores(rows, ["sft", "general-rl"], (("stem", "pass@1"), ("rubric", "reward"))),
            sp.plot_accuracy_vs_tokens(rows, ["sft", "general-rl"])]  # fmt: skip
    assert all(f.axes for f in figs)
    plt.close("all")
