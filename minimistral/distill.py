r"""Logit distillation, the loss of Cascade Distillation (paper section 3.1, Algorithm 1).

Every Ministral 3 child is pruned from the previous one and then trained to imitate the
parent (Mistral Small 3.1) on its logits alone. At each position $i$ the teacher's
next-token distribution $p_T$ is the target and the student's $p_S$ is pulled towards
it with the forward Kullback-Leibler divergence

$$\mathcal{L}_{KD} = \frac{1}{N} \sum_{i=1}^{N} \tau^2 \sum_{v=1}^{V}
    p_T(v \mid x_{\le i}) \log \frac{p_T(v \mid x_{\le i})}{p_S(v \mid x_{\le i})},
\qquad p = \mathrm{softmax}(z / \tau),$$

summed over the full vocabulary ($V$ = 131,072 for Tekken). The paper found pure
forward KL better than mixing in the next-token loss
$\mathcal{L}_{NTP} = -\frac1N \sum_i \log p_S(x_{i+1} \mid x_{\le i})$ (docs/paper.md §3);
both that mix, $(1 - \lambda)\,\mathcal{L}_{KD} + \lambda\,\mathcal{L}_{NTP}$, and the
reverse KL $\mathrm{KL}(p_S \,\|\, p_T)$ are here as ablations. The paper does not give a
temperature; $\tau = 1$ is the default.

Memory. A $[N, V]$ fp32 tensor for $N$ = 16,384 tokens and $V$ = 131,072 is 8 GiB, and
the naive formula makes several (two log-softmaxes, their exponential, their gradient).
Here the tokens are processed ``chunk_size`` rows at a time, in the forward pass and
again in the backward pass (which recomputes each chunk instead of storing it), so the
fp32 work space is $O(\text{chunk\_size} \times V)$; only the gradient of the logits,
in their own dtype, is full size, as it must be. The price is the recomputation: on CPU,
512 bf16 tokens x 131,072 took 4.9 s forward + backward against 2.4 s for the naive
formula, with 0.5 GiB of peak memory above the inputs against 1.3 GiB.

:class:`DistillLoss` plugs these losses into the one training engine
(:class:`~minimistral.train.Trainer`) with a frozen teacher run on the same batch, and
:func:`distill` is Algorithm 1's ``distill(model, data, teacher=parent)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from minimistral.arch.model import Ministral3
from minimistral.train import CHECKPOINT, TrainConfig, Trainer, Windows, lm_loss, precision

KINDS = ("forward", "reverse")


# ----------------------------------------------------------------------------- per-token losses
def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """fp32, or fp64 when an input is fp64: bf16/fp16 logits are never reduced in their own dtype."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def token_kl(student: torch.Tensor, teacher: torch.Tensor, kind: str, temperature: float) -> torch.Tensor:
    r"""Per-token KL at temperature $\tau$, times $\tau^2$: ``[n, vocab]`` logits -> ``[n]``.

    forward: $\tau^2 \sum_v p_T \log(p_T / p_S)$; reverse: $\tau^2 \sum_v p_S \log(p_S / p_T)$,
    with $p = \mathrm{softmax}(z / \tau)$ in fp32 (paper section 3.1). Logits must be finite.
    """
    dtype = _compute_dtype(student, teacher)
    log_p_s = F.log_softmax(student.to(dtype) / temperature, dim=-1)  # [n, vocab]
    log_p_t = F.log_softmax(teacher.to(dtype) / temperature, dim=-1)  # [n, vocab]
    log_p, log_q = (log_p_t, log_p_s) if kind == "forward" else (log_p_s, log_p_t)  # KL(p || q)
    return temperature**2 * (log_p.exp() * (log_p - log_q)).sum(dim=-1)  # [n]


def token_ce(student: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    r"""Per-token next-token cross-entropy $-\log p_S(x_{i+1})$ in fp32: ``[n, vocab]``, ``[n]`` -> ``[n]``."""
    return F.cross_entropy(student.to(_compute_dtype(student)), targets, reduction="none")  # [n]


# ----------------------------------------------------------------------------- chunked mean
def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


class _ChunkedTokenLoss(torch.autograd.Function):
    r"""$\sum_i w_i\,\ell(\text{rows}_i)$, forward and backward ``chunk_size`` rows at a time.

    Forward keeps only the inputs; backward recomputes $\ell$ on each chunk under autograd
    and writes that chunk's gradient into a preallocated buffer, so no intermediate
    larger than one chunk ever exists (unlike ``torch.utils.checkpoint`` on slices, whose
    slice-backward would allocate a full-size zero gradient per chunk).
    """

    @staticmethod
    def forward(ctx, token_loss: Callable, chunk_size: int, weight: torch.Tensor, *rows: torch.Tensor):
        ctx.token_loss, ctx.chunk_size = token_loss, chunk_size
        ctx.save_for_backward(weight, *rows)
        total = weight.new_zeros(())
        for chunk in _chunks(weight.shape[0], chunk_size):
            total = total + (weight[chunk] * token_loss(*(x[chunk] for x in rows))).sum()
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_total: torch.Tensor):
        weight, *rows = ctx.saved_tensors
        needs = ctx.needs_input_grad[3:]
        grads = [torch.zeros_like(x) if need else None for x, need in zip(rows, needs, strict=True)]
        for chunk in _chunks(weight.shape[0], ctx.chunk_size):
            pieces = [x[chunk].detach().requires_grad_(need) for x, need in zip(rows, needs, strict=True)]
            with torch.enable_grad():
                partial_sum = (weight[chunk] * ctx.token_loss(*pieces)).sum()
            wanted = [p for p, need in zip(pieces, needs, strict=True) if need]
            buffers = [g for g in grads if g is not None]
            for buffer, g in zip(buffers, torch.autograd.grad(partial_sum, wanted, grad_total), strict=True):
                buffer[chunk] = g
        return None, None, None, *grads


def token_mean(
    token_loss: Callable[..., torch.Tensor],
    logits: torch.Tensor,
    other: torch.Tensor,
    mask: torch.Tensor | None,
    chunk_size: int,
) -> torch.Tensor:
    r"""Masked mean $\sum_i m_i \ell_i / \sum_i m_i$ of ``token_loss(logits_i, other_i)``, chunk by chunk.

    ``logits`` ``[..., vocab]``, ``other`` (teacher logits ``[..., vocab]`` or targets ``[...]``),
    ``mask`` ``[...]`` (None = every token). An all-masked batch gives 0.
    """
    lead = logits.dim() - 1  # number of token dimensions, e.g. 2 for [b, t, vocab]
    flat, other_flat = logits.flatten(0, lead - 1), other.flatten(0, lead - 1)  # [n, vocab], [n, vocab] or [n]
    dtype = _compute_dtype(logits, other) if other.is_floating_point() else _compute_dtype(logits)
    m = torch.ones(flat.shape[0], device=flat.device, dtype=dtype) if mask is None else mask.reshape(-1).to(dtype)
    weight = m / m.sum().clamp(min=1)  # [n]
    return _ChunkedTokenLoss.apply(token_loss, chunk_size, weight, flat, other_flat)


# ----------------------------------------------------------------------------- the losses
def _check(student_logits, teacher_logits, mask, temperature: float, chunk_size: int) -> None:
    if student_logits.dim() < 2:
        raise ValueError(f"student_logits: expected [..., vocab], got shape {tuple(student_logits.shape)}")
    if teacher_logits.shape != student_logits.shape:
        shapes = f"{tuple(teacher_logits.shape)} vs student_logits {tuple(student_logits.shape)}"
        raise ValueError(f"teacher_logits: shape {shapes} (they must match)")
    if mask is not None and mask.shape != student_logits.shape[:-1]:
        raise ValueError(f"mask: shape {tuple(mask.shape)}, expected {tuple(student_logits.shape[:-1])}")
    _check_scalars(temperature, chunk_size)


def _check_scalars(temperature: float, chunk_size: int) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    if not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise ValueError(f"chunk_size: must be a positive integer, got {chunk_size!r}")


def forward_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> torch.Tensor:
    r"""Forward KL, the paper's distillation loss (section 3.1): masked token mean of
    $\tau^2\,\mathrm{KL}(p_T \,\|\, p_S) = \tau^2 \sum_v p_T \log(p_T / p_S)$, $p = \mathrm{softmax}(z/\tau)$.

    The $\tau^2$ factor is Hinton et al.'s (2015) convention: the gradient of the softened
    KL w.r.t. the logits shrinks like $1/\tau^2$, so the factor keeps its scale independent
    of $\tau$. Logits ``[..., vocab]`` (any float dtype; computed in fp32), ``mask`` ``[...]``
    bool or 0/1. Forward and backward run ``chunk_size`` tokens at a time.
    """
    return _kl("forward", student_logits, teacher_logits, mask, temperature, chunk_size)


def reverse_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> torch.Tensor:
    r"""Reverse KL (an ablation; mode-seeking): masked token mean of
    $\tau^2\,\mathrm{KL}(p_S \,\|\, p_T) = \tau^2 \sum_v p_S \log(p_S / p_T)$.
    Same conventions as :func:`forward_kl`."""
    return _kl("reverse", student_logits, teacher_logits, mask, temperature, chunk_size)


def _kl(kind: str, student_logits, teacher_logits, mask, temperature: float, chunk_size: int) -> torch.Tensor:
    _check(student_logits, teacher_logits, mask, temperature, chunk_size)
    kl = partial(token_kl, kind=kind, temperature=temperature)
    return token_mean(kl, student_logits, teacher_logits, mask, chunk_size)


def next_token_loss(
    student_logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None, chunk_size: int = 1024
) -> torch.Tensor:
    r"""Masked token mean of $-\log p_S(x_{i+1} \mid x_{\le i})$ (fp32, chunked like :func:`forward_kl`)."""
    if targets.shape != student_logits.shape[:-1]:
        raise ValueError(f"targets: shape {tuple(targets.shape)}, expected {tuple(student_logits.shape[:-1])}")
    if mask is not None and mask.shape != targets.shape:
        raise ValueError(f"mask: shape {tuple(mask.shape)}, expected {tuple(targets.shape)}")
    return token_mean(token_ce, student_logits, targets, mask, chunk_size)


def _check_options(kind: str, ntp_weight: float, temperature: float, chunk_size: int) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind: must be one of {KINDS}, got {kind!r}")
    if not 0.0 <= ntp_weight <= 1.0:
        raise ValueError(f"ntp_weight: must be in [0, 1], got {ntp_weight}")
    _check_scalars(temperature, chunk_size)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    kind: str = "forward",
    ntp_weight: float = 0.0,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    chunk_size: int = 1024,
) -> dict[str, torch.Tensor]:
    r"""$\mathcal{L} = (1 - \lambda)\,\mathcal{L}_{KD} + \lambda\,\mathcal{L}_{NTP}$ with $\lambda$ = ``ntp_weight``.

    The paper (section 3.1) uses pure forward KL, $\lambda = 0$; $\lambda > 0$ is the
    "KD + next-token" mix it found worse. Returns ``{"loss", "kl", "ntp"}``; ``kl`` and
    ``ntp`` are detached and both always computed (a term with weight 0 runs without
    autograd), so the next-token loss can be logged while training on KL alone.
    """
    _check_options(kind, ntp_weight, temperature, chunk_size)
    divergence = forward_kl if kind == "forward" else reverse_kl
    with torch.set_grad_enabled(torch.is_grad_enabled() and ntp_weight < 1):
        kl = divergence(student_logits, teacher_logits, mask, temperature, chunk_size)
    with torch.set_grad_enabled(torch.is_grad_enabled() and ntp_weight > 0):
        ntp = next_token_loss(student_logits, targets, mask, chunk_size)
    if ntp_weight == 0:
        loss = kl
    elif ntp_weight == 1:
        loss = ntp
    else:
        loss = (1 - ntp_weight) * kl + ntp_weight * ntp
    return {"loss": loss, "kl": kl.detach(), "ntp": ntp.detach()}


# ----------------------------------------------------------------------------- the Trainer's loss_fn
def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The :class:`Ministral3` inside a DDP (``.module``) or ``torch.compile`` (``._orig_mod``) wrapper."""
    for attr in ("module", "_orig_mod"):
        inner = getattr(model, attr, None)
        if isinstance(inner, torch.nn.Module):
            return _unwrap(inner)
    return model


def check_pair(student: torch.nn.Module, teacher: Ministral3) -> None:
    """Student and teacher may differ in width and depth but must share the vocabulary, and no weights."""
    s, t = _unwrap(student), _unwrap(teacher)
    if s.config.vocab_size != t.config.vocab_size:
        raise ValueError(
            f"teacher: vocab_size {t.config.vocab_size} differs from the student's {s.config.vocab_size}; "
            "logit distillation compares distributions over one shared vocabulary"
        )
    if {id(p) for p in s.parameters()} & {id(p) for p in t.parameters()}:
        raise ValueError("teacher: shares parameters with the student; distil from a frozen copy (copy.deepcopy)")


class DistillLoss:
    r"""``loss_fn(model, batch)`` for :class:`~minimistral.train.Trainer`: :func:`kd_loss` against a frozen teacher.

    ``batch`` is token windows ``[b, seq + 1]``: inputs ``[:, :-1]``, targets ``[:, 1:]``.
    The teacher (put in eval mode, ``requires_grad`` off, in place) reads the same inputs
    under ``torch.no_grad`` and follows the student's device on the first call (or
    :meth:`to`). Returns ``{"loss", "tokens", "kl", "ntp", "teacher_ce"}``: ``ntp`` is the
    student's next-token cross-entropy and ``teacher_ce`` the teacher's on the same batch
    (the line Figure 2 draws under the students' curves).
    """

    def __init__(
        self,
        teacher: Ministral3,
        kind: str = "forward",
        ntp_weight: float = 0.0,
        temperature: float = 1.0,
        chunk_size: int = 1024,
    ):
        _check_options(kind, ntp_weight, temperature, chunk_size)
        self.teacher = teacher.eval().requires_grad_(False)
        self.kind, self.ntp_weight, self.temperature, self.chunk_size = kind, ntp_weight, temperature, chunk_size

    def to(self, device: str | torch.device) -> DistillLoss:
        """Move the teacher to ``device``; returns ``self``."""
        self.teacher.to(device)
        return self

    def __call__(self, model: torch.nn.Module, batch: torch.Tensor) -> dict:
        if not (isinstance(batch, torch.Tensor) and batch.dim() == 2 and batch.shape[1] >= 2):
            raise ValueError(f"batch: expected token windows [b, seq + 1], got {getattr(batch, 'shape', type(batch))}")
        check_pair(model, self.teacher)
        inputs, targets = batch[:, :-1], batch[:, 1:]  # [b, T]
        if self.teacher.lm_head.weight.device != inputs.device:
            self.to(inputs.device)
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)  # [b, T, vocab]
        student_logits = model(inputs)  # [b, T, vocab]
        out = kd_loss(
            student_logits,
            teacher_logits,
            targets,
            self.kind,
            self.ntp_weight,
            self.temperature,
            chunk_size=self.chunk_size,
        )
        teacher_ce = next_token_loss(teacher_logits, targets, chunk_size=self.chunk_size)
        return out | {"tokens": targets.numel(), "teacher_ce": teacher_ce}


# ----------------------------------------------------------------------------- losses on responses
# A response batch (``train.pad_right``): ``{"input_ids", "targets", "mask"}`` ``[b, T]``, the mask on the
# tokens learned (an answer, an assistant turn), optionally images (``"pixel_values"``, ``"image_sizes"``)
# and pretraining windows ``"text"`` ``[rows, seq + 1]`` learned with the same objective beside them.
def response_logits(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """The model's logits ``[b, T, vocab]`` on a response batch (with its images, if it has any)."""
    if "pixel_values" in batch:
        return model(batch["input_ids"], pixel_values=batch["pixel_values"], image_sizes=batch["image_sizes"])
    return model(batch["input_ids"])


def response_loss(model: torch.nn.Module, batch: dict) -> dict:
    r"""Next-token loss on the learned tokens $R$ only,
    $\mathcal{L}_R = -\frac{1}{|R|}\sum_{t \in R} \log p_\theta(x_{t+1} \mid x_{\le t})$ (prompt and images masked),
    plus the next-token loss $\mathcal{L}_{text}$ of the batch's text windows when it has some."""
    answers = next_token_loss(response_logits(model, batch), batch["targets"], batch["mask"])
    out = {"loss": answers, "tokens": int(batch["mask"].sum())}
    return with_text(out, batch, lambda windows: lm_loss(model, windows)["loss"])


def with_text(out: dict, batch: dict, text_loss) -> dict:
    """``out`` (a loss on the learned tokens) plus ``text_loss(windows)`` on the batch's text windows when it has
    some key ``"text"``: the sum of the two means, and ``parts`` (each mean with its tokens) for the engine to
    weight each by its own tokens over the ranks (``train.Trainer.rank_loss``). Under several processes a rank
    may hold no window but a stand-in, ``"text_tokens": 0`` (``vision.data.WithText``): its text part is 0
    over 0 tokens, computed all the same so that every rank runs the same forwards."""
    if "text" not in batch:
        return out
    windows = batch["text"]  # [rows, T + 1]
    answers = out["loss"]
    n_text = batch.get("text_tokens", windows[:, 1:].numel())
    text = text_loss(windows) * (1.0 if n_text else 0.0)  # (0: a stand-in's loss, finite, weighs nothing)
    return out | {"loss": answers + text, "answers": answers.detach(), "text": text.detach(),
                  "parts": {"answers": (answers, out["tokens"]), "text": (text, n_text)}}  # fmt: skip


class ResponseDistillLoss:
    r"""Forward KL from a frozen teacher on the learned tokens, $\mathrm{KL}(p_T \| p_S)$ (paper §3.1 and §4's
    SFT), optionally mixed with next-token loss (``ntp_weight`` $\lambda$, 1 = next-token loss alone); on the
    batch's text windows too when it has some, $\mathcal{L} = \mathcal{L}_R + \mathcal{L}_{text}$."""

    def __init__(self, teacher: torch.nn.Module, ntp_weight: float = 0.0):
        _check_options("forward", ntp_weight, 1.0, 1024)
        self.teacher, self.ntp_weight = teacher.eval().requires_grad_(False), ntp_weight
        self.text_loss = DistillLoss(self.teacher, ntp_weight=ntp_weight)  # the same loss on text windows

    def __call__(self, model: torch.nn.Module, batch: dict) -> dict:
        self.teacher.to(batch["input_ids"].device)
        if "teacher" in batch:  # the teacher reads its own view; its learned tokens line up with the student's
            return self.aligned(model, batch)
        with torch.no_grad():
            teacher_logits = response_logits(self.teacher, batch)
        student_logits = response_logits(model, batch)
        out = kd_loss(student_logits, teacher_logits, batch["targets"], ntp_weight=self.ntp_weight, mask=batch["mask"])
        out["tokens"] = int(batch["mask"].sum())
        return with_text(out, batch, lambda windows: self.text_loss(model, windows)["loss"])  # the same teacher

    def aligned(self, model: torch.nn.Module, batch: dict) -> dict:
        """KL on learned tokens that the teacher reads in another context (``batch["teacher"]``, a ``pad_right``
        batch with as many learned tokens per row): the Instruct SFT's answer, which the teacher reads after
        its own reasoning and the student without it. The learned positions of both are gathered in order."""
        view = batch["teacher"]
        if not torch.equal(view["mask"].sum(-1), batch["mask"].sum(-1)):
            raise ValueError("batch['teacher']: every row needs as many learned tokens as the student's row")
        with torch.no_grad():
            teacher_logits = response_logits(self.teacher, view)[view["mask"]]  # [N, vocab]
        student_logits = response_logits(model, batch)[batch["mask"]]  # [N, vocab], the same tokens in order
        targets = batch["targets"][batch["mask"]]  # [N]
        out = kd_loss(student_logits[None], teacher_logits[None], targets[None], ntp_weight=self.ntp_weight)
        return out | {"tokens": int(batch["mask"].sum())}


# ----------------------------------------------------------------------------- Algorithm 1's distill()
def distill(
    student: Ministral3,
    teacher: Ministral3,
    train_data,
    out_dir: str | os.PathLike,
    cfg: TrainConfig,
    val_data=None,
    loss: DistillLoss | None = None,
    val_loss_fn: Callable[[torch.nn.Module, Any], dict] | None = None,
    extra_files: dict[str, Path] | None = None,
    desc: str = "distill",
    device: str | torch.device | None = None,
    max_steps: int | None = None,
) -> Path:
    r"""Algorithm 1's ``distill(model, data, teacher=parent)``: train ``student`` on a :class:`DistillLoss`.

    Minimises $(1 - \lambda)\,\tau^2\,\mathrm{KL}(p_T \| p_S) + \lambda\,\mathcal{L}_{NTP}$
    (paper: forward KL, $\lambda = 0$, section 3.1) with the one engine
    :class:`~minimistral.train.Trainer`, so schedule, checkpoints and exact resume from
    ``out_dir`` are the Trainer's. ``loss`` sets kind, $\lambda$, $\tau$ (default:
    ``DistillLoss(teacher)``, the paper's choice) and must hold ``teacher``. Validation
    measures ``val_loss_fn`` (e.g. :func:`~minimistral.train.lm_loss`, next-token loss
    comparable with the teacher's) or, when None, the distillation loss itself.
    Returns ``out_dir/checkpoint`` (a standard checkpoint of the student).
    """
    check_pair(student, teacher)
    loss = DistillLoss(teacher) if loss is None else loss
    if loss.teacher is not teacher:
        raise ValueError("loss: its teacher is not the `teacher` passed to distill()")
    trainer = Trainer(
        student,
        cfg,
        train_data,
        out_dir,
        val_data=val_data,
        loss_fn=loss,
        val_loss_fn=val_loss_fn,
        extra_files=extra_files,
        desc=desc,
        device=device,
    )
    loss.to(trainer.device)
    trainer.fit(max_steps)  # max_steps: stop early (a smoke test); running again continues
    return trainer.out / CHECKPOINT


# ----------------------------------------------------------------------------- real checkpoints
def same_inputs(out_dir: Path, **inputs) -> None:
    """A run resumes only on the inputs it started with: ``out_dir/inputs.json`` records them (paths resolved);
    another student, teacher or data on resume is a one-line error (the optimizer's state belongs to the first)."""
    from minimistral.distributed import rank_world
    from minimistral.files import write_json
    from minimistral.train import ResumeError

    now = {k: str(Path(v).resolve()) if isinstance(v, (str, os.PathLike)) and Path(v).exists() else v
           for k, v in inputs.items()}  # fmt: skip
    file = out_dir / "inputs.json"
    if file.is_file() and (out_dir / "checkpoint").is_dir():  # a run to resume: its inputs must not change
        saved = json.loads(file.read_text())
        for key, value in now.items():
            if saved.get(key) != value:
                option = "--" + key.replace("_", "-")
                raise ResumeError(f"{file}: cannot resume: {option} was {saved.get(key)!r}, now {value!r}; "
                                  "another --out starts a new run")  # fmt: skip
    elif rank_world()[0] == 0:
        write_json(now, file)


def distill_checkpoint(
    student: str | os.PathLike,
    teacher: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: TrainConfig,
    data: str = "mixture",
    tokens: int = 1_000_000,
    seq_len: int = 4096,
    teacher_dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device | None = None,
    max_steps: int | None = None,
) -> Path:
    r"""``minimistral distill``: distil any checkpoint directory (e.g. a pruned real one) from another.

    The student trains in fp32 (master weights; bf16 autocast on CUDA), the frozen teacher is held in
    ``teacher_dtype``. Data: ``tokens`` of ``data`` (a project source, or a UTF-8 text file) encoded with
    the student's tokenizer as windows of ``seq_len + 1``; the last 1 in 20 windows are held out for
    validation (next-token loss, comparable with the teacher's). Under ``torchrun`` with ``cfg.fsdp``,
    student and teacher are sharded over the ranks (FSDP2). Returns ``out_dir/checkpoint``: an HF
    directory with the student's tokenizer, that resumes (run the same command again).
    """
    from minimistral.arch.hub import from_pretrained, load_sharded
    from minimistral.arch.model import default_device
    from minimistral.data.corpus import text_windows
    from minimistral.data.tokenizer import check_same_tokenizer, tokenizer_files
    from minimistral.distributed import rank_world

    tokenizer = check_same_tokenizer(student, teacher)
    same_inputs(Path(out_dir), student=student, teacher=teacher, data=data, tokens=tokens, seq_len=seq_len)
    windows = text_windows(tokenizer, data, tokens, seq_len + 1)  # [n, seq_len + 1]
    held = max(1, len(windows) // 20)
    if len(windows) <= held:
        raise ValueError(f"--tokens {tokens}: {len(windows)} windows of {seq_len + 1}; need at least 2")
    place = torch.device(device) if device else default_device()
    if cfg.fsdp and rank_world()[1] > 1:  # each rank reads only its shard of each (hub.load_sharded)
        bf16 = precision(cfg, place) == "bf16"
        s = load_sharded(student, torch.float32, place, bf16)
        t = load_sharded(teacher, teacher_dtype, place, bf16)
    else:
        s = from_pretrained(student, dtype=torch.float32, device="cpu")
        t = from_pretrained(teacher, dtype=teacher_dtype, device="cpu")
    return distill(
        s,
        t,
        Windows(windows[:-held]),
        out_dir,
        cfg,
        val_data=Windows(windows[-held:]),
        val_loss_fn=lm_loss,
        extra_files=tokenizer_files(student),
        desc=f"distill {Path(student).name}",
        device=device,
        max_steps=max_steps,
    )
