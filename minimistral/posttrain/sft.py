r"""Supervised fine-tuning on conversations, with logit distillation from a stronger teacher (paper §4).

The paper's SFT trains on the assistant's turns only, and its loss is logit distillation from a
stronger teacher (Mistral Medium 3) rather than next-token loss on the reference: for the 3B, plain
SFT made the Reasoning model verbose and repetitive. Here the stronger teacher is the tiny parent
fine-tuned on the same conversations (bigger than every child), and a child's loss is the forward
KL from it on the assistant's tokens, prompt masked (``distill.ResponseDistillLoss``):

.. math::

    \mathcal{L}_{SFT} = \frac{1}{|R|} \sum_{t \in R}
        \mathrm{KL}\big(p_T(\cdot \mid x_{\le t}) \,\|\, p_S(\cdot \mid x_{\le t})\big)

or, with no teacher, the next-token loss on the same tokens (``distill.response_loss``). The vision
encoder stays frozen, the projector trainable (as the paper's SFT). One run of the engine
(:class:`~minimistral.train.Trainer`): progress bar, atomic checkpoints, exact resume.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from minimistral.arch.hub import from_pretrained
from minimistral.data.tokenizer import EOS_ID, Tokenizer, tokenizer_files
from minimistral.distill import ResponseDistillLoss, response_loss
from minimistral.posttrain.chat import END_THINK, encode_chat
from minimistral.train import CHECKPOINT, TrainConfig, Trainer, pad_right


class ChatExamples:
    """Conversations as training examples: ``batch(indices)`` -> ``{"input_ids", "targets", "mask"}`` ``[b, T]``,
    the mask on the tokens the assistant writes (``chat.encode_chat``); right-padded with ``</s>``."""

    def __init__(self, conversations: Sequence[Sequence[Mapping[str, str]]], tokenizer: Tokenizer, max_len: int):
        self.rows = [encode_chat(tokenizer, c) for c in conversations]
        if too_long := [i for i, (ids, _) in enumerate(self.rows) if len(ids) > max_len]:
            raise ValueError(f"conversations {too_long[:5]}: longer than max_len={max_len} tokens")

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        return pad_right([self.rows[int(i)] for i in indices], EOS_ID)


class AnswerExamples(ChatExamples):
    """Instruct SFT's examples: conversations that answer at once (their thinking removed), each with the
    teacher's view in ``batch(...)["teacher"]``: the whole conversation, thinking included, learned on the
    answer only. The stronger teacher reasons before it answers; the Instruct student learns the answer it
    gives after reasoning, without writing the reasoning (``distill.ResponseDistillLoss.aligned``)."""

    def __init__(self, conversations: Sequence[Sequence[Mapping[str, str]]], tokenizer: Tokenizer, max_len: int):
        super().__init__([[_without_thinking(m) for m in c] for c in conversations], tokenizer, max_len)
        self.teacher_rows = [_answer_only(*encode_chat(tokenizer, c)) for c in conversations]

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        return super().batch(indices) | {"teacher": pad_right([self.teacher_rows[int(i)] for i in indices], EOS_ID)}


def _without_thinking(message: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in message.items() if k != "thinking"}


def _answer_only(ids: list[int], mask: list[bool]) -> tuple[list[int], list[bool]]:
    """The mask of the last assistant turn's answer: the learned tokens after its last ``[/THINK]``."""
    end = max((i for i, t in enumerate(ids) if t == END_THINK), default=-1)
    return ids, [m and i > end for i, m in enumerate(mask)]


def sft(
    student: str | os.PathLike,
    data: ChatExamples,
    out_dir: str | os.PathLike,
    cfg: TrainConfig,
    teacher: str | os.PathLike | None = None,
    ntp_weight: float = 0.0,
    val_data: ChatExamples | None = None,
    device=None,
    desc: str = "sft",
) -> Path:
    """Fine-tune the checkpoint ``student`` on ``data``: KL from ``teacher`` (next-token loss without one)."""
    model = from_pretrained(student)
    if hasattr(model, "vision_tower"):
        model.vision_tower.requires_grad_(False)
    loss = response_loss if teacher is None else ResponseDistillLoss(from_pretrained(teacher), ntp_weight)
    trainer = Trainer(
        model,
        cfg,
        data,
        out_dir,
        val_data=val_data,
        loss_fn=loss,
        val_loss_fn=response_loss,
        device=device,
        desc=desc,
        extra_files=tokenizer_files(student),  # tekken.json or tokenizer.json, carried into every checkpoint
    )
    trainer.fit()
    return trainer.out / CHECKPOINT
