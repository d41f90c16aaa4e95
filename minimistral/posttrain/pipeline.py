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

from dataclasses import dataclass
from pathlib import Path

from minimistral.arch.hub import from_pretrained
from minimistral.data.corpus import build_corpus
from minimistral.data.tokenizer import load_tokenizer, per_tokenizer
from minimistral.posttrain.chat import encode_prompt
from minimistral.posttrain.grpo import GRPOTrainer, Prompts, RLConfig
from minimistral.posttrain.rubrics import RubricPrompt, rubric_prompts
from minimistral.posttrain.sft import ChatExamples, sft
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
        ChatExamples([x.chat() for x in test], tok, MAX_LEN),
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
    tokenizer = Path(start) / "tokenizer.json"
    trainer = GRPOTrainer(
        model, _config(steps, p.prompts, p.rl_lr, seed), rl, prompts, reward, out, reference, device=device,
        desc=f"{stage} rl", extra_files={"tokenizer.json": tokenizer} if tokenizer.is_file() else {},
    )  # fmt: skip
    trainer.fit()
    return trainer.out / CHECKPOINT
