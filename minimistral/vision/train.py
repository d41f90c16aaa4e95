"""Teaching the tiny family to see (paper section 2): the parent's encoder and projector, then each child's projector.

* :func:`vision_parent`: the tiny parent (our Mistral Small 3.1) gets a new Pixtral-shaped ViT
  (``TINY_VISION``) and projector, first aligned to its output head, then trained on image
  questions (``vision.data``) with next-token loss on the answers. Its language model trains
  too, at ``lm_lr_scale`` times the learning rate (1 at the default scale: with 0.1 the
  training loss after 60 steps was 0.86 nats against 0.44, measured once): the paper's parent
  was trained on interleaved image-text from the start, ours only read text.
* :func:`vision_child`: a child copies the parent's ViT bitwise and freezes it, gets a new
  projector, and learns from the parent by logit distillation (forward KL) on the same image
  questions: projector and language model train, as in the paper's distillation, where the
  projector trains with the language model on text and interleaved image-text.

Both see text too: a batch holds image questions and a few pretraining windows
(``vision.data.WithText``), and the loss adds the same objective on the text (next-token loss for
the parent, KL from the parent for a child). Without it, the language models forgot text (tiny-3b:
2.04 -> 3.01 bits per byte, measured; the study measures it with: ``vision_text_bpb.csv``).

Both are ordinary runs of the one engine (:class:`~minimistral.train.Trainer`): progress bar,
atomic checkpoints (``mistral3`` directories transformers loads), exact resume.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from minimistral.arch.hub import from_pretrained
from minimistral.arch.model import Ministral3
from minimistral.data.tokenizer import tokenizer_files
from minimistral.distill import ResponseDistillLoss, next_token_loss, response_logits, response_loss
from minimistral.train import CHECKPOINT, TrainConfig, Trainer
from minimistral.vision.config import TINY_VISION, VisionConfig
from minimistral.vision.data import ImageQuestions, SceneCells
from minimistral.vision.model import VisionLanguageModel


def cell_loss(model: VisionLanguageModel, batch: dict) -> dict:
    r"""Alignment: each image token's feature $z$, read through the decoder's own output head, says the digit
    under it: $-\log \mathrm{softmax}(W_{out}\, \mathrm{Norm}(z))[\text{digit}]$ (the decoder's layers skipped)."""
    z = model.image_features(batch["pixel_values"], batch["image_sizes"])  # [b * n, hidden]
    logits = model.lm_head(model.model.norm(z))  # [b * n, vocab]
    targets = batch["cell_tokens"].flatten()
    loss = next_token_loss(logits[None], targets[None])
    return {"loss": loss, "tokens": targets.numel(), "cell_accuracy": (logits.argmax(-1) == targets).float().mean()}


@torch.no_grad()
def answer_accuracy(model: VisionLanguageModel, data: ImageQuestions, batch_size: int = 64, blind: bool = False):
    """Exact-match accuracy per question kind, greedy: every answer token and the ``</s>`` are the argmax.

    Teacher-forced argmax over the answer equals greedy decoding's exact match (greedy writes the
    reference iff each of its tokens is the argmax after the previous ones). ``blind``: black images.
    """
    model.eval()
    device = model.lm_head.weight.device
    correct = torch.zeros(len(data), dtype=torch.bool)
    for start in range(0, len(data), batch_size):
        idx = torch.arange(start, min(len(data), start + batch_size))
        batch = {k: v.to(device) for k, v in data.batch(idx).items()}
        if blind:
            batch["pixel_values"] = torch.zeros_like(batch["pixel_values"])
        right = (response_logits(model, batch).argmax(-1) == batch["targets"]) | ~batch["mask"]
        correct[idx] = right.all(-1).cpu()
    return {k: correct[i :: len(data.kinds)].float().mean().item() for i, k in enumerate(data.kinds)}


def with_new_vision(text: Ministral3, vision: VisionConfig = TINY_VISION, seed: int = 0) -> VisionLanguageModel:
    """``text``'s decoder (its tensors copied) with a new encoder and projector initialised from ``seed``."""
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = VisionLanguageModel(text.config, vision)
    model = model.to_empty(device=text.lm_head.weight.device)
    model.init_vision_weights()
    model.load_state_dict(text.state_dict(), strict=False)  # the vision modules keep their new weights
    model.tie_weights()
    return model


def vision_parent(
    parent: str | os.PathLike,
    cells: SceneCells,
    questions: ImageQuestions,
    out_dir: str | os.PathLike,
    align: TrainConfig,
    tune: TrainConfig,
    lm_lr_scale: float = 1.0,
    val_questions: ImageQuestions | None = None,
    device=None,
) -> Path:
    """The parent with a new ViT and projector, in two runs of the engine (``out_dir/align``, ``out_dir/questions``).

    1. *align*: ViT and projector learn to make each image token's feature read, through the frozen
       decoder's output head, as the digit under it (:func:`cell_loss`; a from-scratch encoder gets
       no usable gradient through the whole decoder at first: Pixtral, too, was trained before
       Mistral Small 3.1 read its features);
    2. *questions*: the whole model on the image questions (:func:`~minimistral.distill.response_loss`), the language
       model at ``lm_lr_scale`` times the learning rate (0 = frozen).
    """
    out = Path(out_dir)
    model = with_new_vision(from_pretrained(parent, text_only=True), seed=align.seed)
    tokenizer = tokenizer_files(parent)
    aligned = _trainer(model, align, cells, out / "align", cell_loss, 0.0, None, device, "vision align", tokenizer)
    aligned.fit()
    model = from_pretrained(out / "align" / CHECKPOINT)
    tuned = _trainer(
        model,
        tune,
        questions,
        out / "questions",
        response_loss,
        lm_lr_scale,
        val_questions,
        device,
        "vision",
        tokenizer,
    )
    tuned.fit()
    return tuned.out / CHECKPOINT


def vision_child(
    child: str | os.PathLike,
    teacher: str | os.PathLike,
    data: ImageQuestions,
    out_dir: str | os.PathLike,
    cfg: TrainConfig,
    ntp_weight: float = 0.0,
    freeze_vit: bool = True,
    val_data: ImageQuestions | None = None,
    device=None,
) -> Path:
    """A child with the teacher's ViT (copied bitwise; frozen unless ``freeze_vit=False``) and a new projector."""
    parent = from_pretrained(teacher)
    model = with_new_vision(from_pretrained(child, text_only=True), parent.vision_config, seed=cfg.seed)
    model.vision_tower.load_state_dict(parent.vision_tower.state_dict())
    model.vision_tower.requires_grad_(not freeze_vit)
    loss = ResponseDistillLoss(parent, ntp_weight)
    trainer = _trainer(model, cfg, data, out_dir, loss, 1.0, val_data, device, "vision child", tokenizer_files(child))
    trainer.fit()
    return trainer.out / CHECKPOINT


class AlignTrainer(Trainer):
    """The engine for the parent's alignment. Under ``--fsdp`` the model stays replicated: :func:`cell_loss`
    reads the projector and the head outside the model's forward, where FSDP2 would hold only shards of them
    (and what trains here, the new encoder and projector, is small). The other vision stages go through the
    model's forward and shard like any other."""

    SHARDABLE = False


def _trainer(model, cfg, data, out_dir, loss_fn, lm_lr_scale, val_data, device, desc, extra_files) -> Trainer:
    model.model.requires_grad_(lm_lr_scale > 0)
    model.lm_head.requires_grad_(lm_lr_scale > 0)
    return (AlignTrainer if loss_fn is cell_loss else Trainer)(
        model,
        cfg,
        data,
        out_dir,
        val_data=val_data,
        loss_fn=loss_fn,
        val_loss_fn=response_loss if val_data is not None else None,
        device=device,
        desc=desc,
        extra_files=extra_files,
        lr_scale=lambda name: lm_lr_scale if name.startswith(("model.", "lm_head.")) else 1.0,
    )
