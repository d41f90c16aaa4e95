"""The Reasoning recipe, step by step (paper §4): the stronger teacher, then per child SFT -> STEM RL -> General RL.

Each function takes and returns checkpoint directories and returns at once when its checkpoint exists::

    teacher = teach(parent, out, scale)                       # the tiny parent, SFT on the same data
    sft = sft_child(base, teacher, out, scale)                # KL from the teacher on the assistant's tokens
    stem = rl_stage(sft, out, scale, "stem")                  # GRPO, verifiable rewards, short limit
    reasoning = rl_stage(stem, out, scale, "general")         # GRPO, rubric rewards, longer limit

The SFT data are conversations that think before they answer: a STEM problem thinks its worked
solution, a rubric prompt restates its rules, then answers (``Problem.chat``, ``RubricPrompt.chat``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from minimistral.arch.hub import from_pretrained
from minimistral.data.corpus import build_corpus
from minimistral.data.tokenizer import load_tokenizer, per_tokenizer, tokenizer_files
from minimistral.evaluate.cache import cached
from minimistral.posttrain.chat import encode_prompt, judged_answer
from minimistral.posttrain.grpo import GRPOTrainer, Prompts, RLConfig
from minimistral.posttrain.odpo import ODPOConfig, ODPOTrainer
from minimistral.posttrain.pwrm import (
    CALIBRATION,
    Pair,
    PairwiseRewardModel,
    fit_temperature,
    pair_examples,
    ranked_pairs,
    save_pairs,
    write_temperature,
)
from minimistral.posttrain.rollouts import SAMPLING_VERSION, sample
from minimistral.posttrain.rubrics import RubricPrompt, rubric_prompts
from minimistral.posttrain.sft import AnswerExamples, ChatExamples, sft
from minimistral.posttrain.study import grade
from minimistral.posttrain.tasks import Problem, stem_split
from minimistral.scales import Scale, get_scale
from minimistral.train import CHECKPOINT, TrainConfig, finished

MAX_LEN = 256  # the parent's window: every conversation fits it


@dataclass(frozen=True)
class PostData:
    stem: dict[str, list[Problem]]  # "train", "test"
    rubrics: dict[str, list[RubricPrompt]]
    sft: ChatExamples  # every training item as a reasoning conversation
    val: ChatExamples  # the held-out items, for the validation loss
    answers: AnswerExamples  # every training item answered at once (Instruct SFT), with the teacher's view
    answers_val: ChatExamples  # the held-out items answered at once


@per_tokenizer
def posttrain_data(tokenizer_dir: str, scale_name: str) -> PostData:
    """The STEM problems and rubric prompts of ``scale`` (held out from each other and from pretraining), encoded
    with the tokenizer in ``tokenizer_dir``; every checkpoint of the family shares the data built for its tokenizer."""
    p = get_scale(scale_name).posttrain
    tok = load_tokenizer(tokenizer_dir)
    stem = stem_split(p.train_problems, p.test_problems, set(build_corpus().docs["train"]["question"]))
    rubrics = {"train": rubric_prompts("train", p.train_rubrics), "test": rubric_prompts("test", p.test_rubrics)}
    train, test = stem["train"] + rubrics["train"], stem["test"] + rubrics["test"]
    return PostData(
        stem, rubrics, ChatExamples([x.chat() for x in train], tok, MAX_LEN),
        ChatExamples([x.chat() for x in test], tok, MAX_LEN), AnswerExamples([x.chat() for x in train], tok, MAX_LEN),
        ChatExamples([x.chat(thinking=False) for x in test], tok, MAX_LEN),
    )  # fmt: skip


def _config(steps: int, batch_size: int, lr: float, seed: int = 0) -> TrainConfig:
    every = max(1, steps // 4)
    return TrainConfig(
        steps=steps, batch_size=batch_size, lr=lr, min_lr=lr / 10, warmup_steps=max(1, steps // 10), seed=seed,
        eval_every=every, eval_batches=4, ckpt_every=every, log_every=min(10, every),
    )  # fmt: skip


def teach(parent: Path, out: Path, scale: str | Scale, device=None) -> Path:
    """The stronger teacher (the paper's Mistral Medium 3): the tiny parent SFT'd with next-token loss."""
    s = get_scale(scale)
    if finished(out, s.posttrain.teacher_steps):
        return out / CHECKPOINT
    data = posttrain_data(str(parent), s.name)
    cfg = _config(s.posttrain.teacher_steps, s.posttrain.batch_size, s.posttrain.lr)
    return sft(parent, data.sft, out, cfg, val_data=data.val, device=device, desc="sft teacher")


def sft_child(base: Path, teacher: Path, out: Path, scale: str | Scale, ntp_weight=0.0, seed=0, device=None) -> Path:
    """A child's reasoning SFT: forward KL from ``teacher`` (``ntp_weight=1``: plain next-token SFT)."""
    s = get_scale(scale)
    if finished(out, s.posttrain.sft_steps):
        return out / CHECKPOINT
    data = posttrain_data(str(teacher), s.name)
    cfg = _config(s.posttrain.sft_steps, s.posttrain.batch_size, s.posttrain.lr, seed)
    return sft(base, data.sft, out, cfg, teacher, ntp_weight, val_data=data.val, device=device, desc="sft")


def rl_stage(start: Path, out: Path, scale: str | Scale, stage: str, seed: int = 0, device=None) -> Path:
    """GRPO from ``start``: ``stem`` (task checkers, ``stem_tokens``) or ``general`` (rubrics, ``general_tokens``)."""
    s = get_scale(scale)
    p = s.posttrain
    steps = {"stem": p.stem_steps, "general": p.general_steps}[stage]
    if finished(out, steps):
        return out / CHECKPOINT
    tok = load_tokenizer(start)
    data = posttrain_data(str(start), s.name)
    items = data.stem["train"] if stage == "stem" else data.rubrics["train"]
    prompts = Prompts([encode_prompt(tok, x.chat()[:1], think=True) for x in items])

    def reward(i: int, rollout) -> float:
        return grade(tok, items[i], rollout)

    rl = RLConfig(group_size=p.group_size, inner_steps=p.inner_steps, temperature=p.temperature, kl_coef=p.kl_coef,
                  max_new_tokens=p.stem_tokens if stage == "stem" else p.general_tokens)  # fmt: skip
    reference = from_pretrained(start) if p.kl_coef else None  # the KL term's anchor: the stage's starting model
    model = from_pretrained(start)
    if hasattr(model, "vision_tower"):
        model.vision_tower.requires_grad_(False)
    trainer = GRPOTrainer(
        model, _config(steps, p.prompts, p.rl_lr, seed), rl, prompts, reward, out, reference, device=device,
        desc=f"{stage} rl", extra_files=tokenizer_files(start),
    )  # fmt: skip
    trainer.fit()
    return trainer.out / CHECKPOINT


# ----------------------------------------------------------------------------- Instruct SFT, the PWRM, ODPO
def instruct_sft(base: Path, teacher: Path, out: Path, scale: str | Scale, seed: int = 0, device=None) -> Path:
    """A child's Instruct SFT: answer at once, by KL from the teacher's answer after its own reasoning."""
    s = get_scale(scale)
    if finished(out, s.posttrain.instruct_steps):
        return out / CHECKPOINT
    data = posttrain_data(str(teacher), s.name)
    cfg = _config(s.posttrain.instruct_steps, s.posttrain.batch_size, s.posttrain.lr, seed)
    return sft(base, data.answers, out, cfg, teacher, val_data=data.answers_val, device=device, desc="instruct sft")


def policy_answers(checkpoint: Path, thinking: bool, items: list[RubricPrompt], n: int, scale: Scale, seed: int = 0,
                   device=None) -> list[dict]:  # fmt: skip
    """``n`` answers per rubric prompt from a policy at ODPO's temperature (thinking stripped), each with the
    judge's score; cached by the checkpoint's content. A response that never ends scores 0, as in RL."""
    p = scale.posttrain
    spec = {"items": [x.prompt for x in items], "n": n, "tokens": p.general_tokens, "thinking": thinking, "seed": seed,
            "sampling": SAMPLING_VERSION}  # fmt: skip

    def compute():
        model, tok = from_pretrained(checkpoint, device=device), load_tokenizer(checkpoint)
        prompts = [encode_prompt(tok, x.chat()[:1], think=thinking) for x in items]
        rolls = sample(model, prompts, n, p.general_tokens, ODPOConfig.temperature, seed,
                       desc=f"answers of {Path(checkpoint).parent.name}")  # fmt: skip
        out = [{"prompt": items[r.prompt].prompt, "answer": judged_answer(tok, r.ids, thinking),
                "score": grade(tok, items[r.prompt], r, thinking)} for r in rolls]  # fmt: skip
        return out

    return cached(checkpoint, "policy-answers", spec, compute)


def judged_pairs(answers: list[dict], most: int) -> list[Pair]:
    """Per prompt, up to ``most`` pairs of its answers (from every policy) that the judge ranks differently."""
    by_prompt: dict[str, list[dict]] = {}
    for a in answers:
        by_prompt.setdefault(a["prompt"], []).append(a)
    return [
        pair
        for prompt, mine in by_prompt.items()
        for pair in ranked_pairs(prompt, [a["answer"] for a in mine], [a["score"] for a in mine], most)
    ]


def is_calibration(question: str) -> bool:
    """Half of the held-out prompts (by hash of the question) fit the PWRM's temperature; the other half test it."""
    return hashlib.sha256(question.encode()).digest()[0] % 2 == 0


def reward_model(policies: list[tuple[Path, bool]], teacher: Path, out: Path, scale: str | Scale, device=None) -> Path:
    """The PWRM: answers sampled from ``policies`` (checkpoint, thinking) on training rubric prompts, ranked by the
    rubric judge, both orders; SFT from the post-trained parent ``teacher``; temperature fitted on held-out pairs
    (``pairs-calibration.jsonl``; ``pairs-test.jsonl`` is kept for the study)."""
    s = get_scale(scale)
    p = s.posttrain
    checkpoint = out / CHECKPOINT
    if finished(out, p.pwrm_steps) and (checkpoint / CALIBRATION).is_file():
        return checkpoint
    data, tok = posttrain_data(str(teacher), s.name), load_tokenizer(teacher)
    splits = {"train": data.rubrics["train"][: p.pwrm_prompts], "test": data.rubrics["test"]}
    pairs = {}
    for split, items in splits.items():
        answers = [a for ck, thinking in policies for a in policy_answers(ck, thinking, items, p.pwrm_samples, s,
                                                                           device=device)]  # fmt: skip
        pairs[split] = judged_pairs(answers, p.pwrm_pairs)
        if not pairs[split]:
            raise ValueError(f"pwrm: the policies' {len(answers)} answers to {len(items)} {split} prompts hold no pair "
                             "the judge ranks differently (do the policies end their answers?)")  # fmt: skip
    question = {x.prompt: x.question for x in splits["test"]}
    calibration = [x for x in pairs["test"] if is_calibration(question[x.prompt])]
    save_pairs(pairs["train"], out / "pairs-train.jsonl")
    save_pairs(calibration, out / "pairs-calibration.jsonl")
    save_pairs([x for x in pairs["test"] if not is_calibration(question[x.prompt])], out / "pairs-test.jsonl")
    cfg = _config(p.pwrm_steps, p.batch_size, p.lr)
    examples = {name: pair_examples(x, tok, MAX_LEN) for name, x in (("train", pairs["train"]), ("cal", calibration))}
    sft(teacher, examples["train"], out, cfg, val_data=examples["cal"], device=device, desc="pwrm")
    z_ab, z_ba = PairwiseRewardModel(checkpoint, device=device).logits(calibration)  # [n] each, T = 1
    labels = torch.tensor([x.label for x in calibration])  # [n], 1: a is better
    z, y = torch.cat([z_ab, z_ba]), torch.cat([labels, 1 - labels])  # both orders, [2n]
    temperature = fit_temperature(z, y) if calibration else 1.0  # 1: nothing to fit
    write_temperature(checkpoint, temperature, pairs=len(z))
    return checkpoint


def odpo_stage(start: Path, judge: Path, out: Path, scale: str | Scale, thinking: bool, seed: int = 0,
               rescale: bool = True, device=None) -> Path:  # fmt: skip
    """ODPO from ``start`` (the frozen reference too) on the training rubric prompts, judged by the PWRM ``judge``;
    ``thinking``: a Reasoning model (prompts open ``[THINK]``; the thinking is stripped before judging)."""
    s = get_scale(scale)
    p = s.posttrain
    if finished(out, p.odpo_steps):
        return out / CHECKPOINT
    tok, items = load_tokenizer(start), posttrain_data(str(start), s.name).rubrics["train"]
    prompts = Prompts([encode_prompt(tok, x.chat()[:1], think=thinking) for x in items])
    odpo = ODPOConfig(beta=p.beta, rescale=rescale, max_new_tokens=p.general_tokens, thinking=thinking)
    model = from_pretrained(start)
    if hasattr(model, "vision_tower"):
        model.vision_tower.requires_grad_(False)
    trainer = ODPOTrainer(
        model, _config(p.odpo_steps, p.prompts, p.odpo_lr, seed), odpo, prompts, [x.prompt for x in items],
        PairwiseRewardModel(judge, device=device), tok, out, from_pretrained(start), device=device, desc="odpo",
        extra_files=tokenizer_files(start), score=lambda i, rollout: grade(tok, items[i], rollout, thinking),
    )  # fmt: skip
    trainer.fit()
    return trainer.out / CHECKPOINT
