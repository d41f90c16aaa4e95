"""The one training engine. Pretraining, distillation, SFT and RL all run through :class:`Trainer`.

A stage supplies a model, data (anything with ``len()`` and ``batch(indices)``) and a
loss function ``loss_fn(model, batch) -> {"loss": scalar, "tokens": int, ...}`` (any other
scalar it returns, e.g. a distillation stage's next-token loss, is averaged and logged
beside the loss), optionally a different ``val_loss_fn`` for validation; the engine
supplies the rest:

* AdamW, linear warmup then cosine decay, gradient clipping, gradient accumulation;
* bf16 autocast and the fused AdamW kernel on CUDA, fp32 elsewhere; device auto-detection (cuda, mps, cpu);
* optionally (``activation_checkpointing``) every block's activations recomputed in backward instead
  of kept (one block's at a time: memory for depth traded for about a third more compute);
* optionally (``compile=True``) ``torch.compile`` of the model and the fused AdamW kernel:
  the elementwise work (RMSNorm, RoPE, SiLU, the optimizer update) is fused into a few
  loops, 1.25x faster training on the project's 2-core CPU (see benchmarks/bench_speed.py),
  after a one-off compilation of ~15-40 s; results then differ from eager in the last bits;
* a tqdm bar (loss, tokens/s, ETA), periodic validation, metrics appended to JSONL;
* checkpoints holding weights, optimizer, schedule, RNG, data position and step,
  written to a temporary directory and renamed into place (never half-written);
* exact resume: on CPU a run stopped and resumed ends with bitwise the same weights
  as an uninterrupted run; Ctrl-C, and SIGTERM (``kill``, Slurm's preemption or time limit,
  torchrun stopping its workers), save a checkpoint before exiting.

More than one process (``torchrun``): the same global micro-batch is split over the ranks, the
gradients are summed over them (token-weighted, so the step equals one process's), and only rank 0
logs and writes; a run resumes with any number of processes (``minimistral.distributed``). With
``fsdp`` the model (and a distillation loss's teacher) is sharded over the ranks with FSDP2 instead of
copied on each; the steps are the same, and so are the checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch.distributed.fsdp import FSDPModule
from tqdm.auto import tqdm

from minimistral.arch.hub import save_pretrained
from minimistral.arch.model import Ministral3, default_device, set_activation_checkpointing
from minimistral.distributed import (
    all_sum,
    barrier,
    broadcast_parameters,
    full,
    is_sharded,
    like,
    rank_world,
    shard,
    sum_gradients,
)
from minimistral.evaluate.loss import next_token_nll
from minimistral.files import atomic_write

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
CHECKPOINT = "checkpoint"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "0") not in ("", "0")


class ResumeError(RuntimeError):
    """A checkpoint cannot be resumed with the current settings; the message names the field."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation hyper-parameters. Fields above ``compile`` must match to resume a run.

    ``fsdp`` and ``activation_checkpointing`` change how a step is computed, not what it computes; their
    defaults come from the environment (``MINIMISTRAL_FSDP=1``, ``MINIMISTRAL_ACTIVATION_CHECKPOINTING=1``,
    which the CLI's ``--fsdp`` and ``--activation-checkpointing`` set), so they reach every stage of a run.
    """

    steps: int
    batch_size: int = 16  # sequences per micro-batch, over all processes (each takes batch_size / world)
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 3e-3
    min_lr: float = 3e-4  # end of the cosine
    warmup_steps: int = 20
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 0
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere; or "fp32", "bf16"
    # --- free to change between a run and its resumption ---
    compile: bool = False  # torch.compile the model + fused AdamW (faster; not bitwise equal to eager)
    fsdp: bool = field(default_factory=lambda: _env_flag("MINIMISTRAL_FSDP"))  # shard over ranks (FSDP2)
    activation_checkpointing: bool = field(default_factory=lambda: _env_flag("MINIMISTRAL_ACTIVATION_CHECKPOINTING"))
    eval_every: int = 100
    eval_batches: int = 8  # validation micro-batches per evaluation (a fixed set of windows)
    ckpt_every: int = 100
    log_every: int = 10

    RESUMABLE_CHANGES = (
        "compile", "fsdp", "activation_checkpointing", "eval_every", "eval_batches", "ckpt_every", "log_every",
    )  # fmt: skip


def lr_at(step: int, cfg: TrainConfig) -> float:
    r"""Learning rate at optimizer step ``step`` (0-based).

    Warmup: $\eta_s = \eta\,(s+1)/W$ for $s < W$; then cosine
    $\eta_s = \eta_{min} + \tfrac12(\eta - \eta_{min})(1 + \cos(\pi \tfrac{s - W}{S - W}))$.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


# ----------------------------------------------------------------------------- data
class Windows:
    """Fixed-length token windows ``[n, seq + 1]``: inputs are ``[:, :-1]``, targets ``[:, 1:]``.

    ``windows`` may be int32 or memory-mapped (``data.corpus.load_windows``): a batch copies its rows as int64."""

    def __init__(self, windows: torch.Tensor):
        self.windows = windows

    def __len__(self) -> int:
        return self.windows.shape[0]

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        return self.windows[indices].long()  # [b, seq + 1]


def pad_right(rows: Sequence[tuple[Sequence[int], Sequence[bool]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Examples of different lengths as one batch: ``{"input_ids", "targets", "mask"}``, each ``[b, T - 1]``.

    ``rows``: ``(ids, trained)`` per example, ``trained[t]`` true where token ``t`` is learned (a
    response, an answer). Rows are padded on the right with ``pad_id``, which a causal model never
    reads back; ``mask[r, t]`` is ``trained[r][t + 1]``: position ``t`` predicts token ``t + 1``.
    """
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    trained = torch.zeros(len(rows), width, dtype=torch.bool)
    for r, (row, learn) in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
        trained[r, : len(row)] = torch.tensor(learn, dtype=torch.bool)
    return {"input_ids": ids[:, :-1], "targets": ids[:, 1:], "mask": trained[:, 1:]}


class Sampler:
    """Deterministic, stateless order of examples: micro-batch ``p`` is a pure function of ``p``.

    The example stream is a fresh seeded permutation per epoch, concatenated; global micro-batch
    ``p`` is examples ``[p * batch_size, (p + 1) * batch_size)`` of it, whatever the number of
    processes, and process ``rank`` of ``world`` takes slice ``rank`` of ``world`` equal slices.
    Resuming needs only the number of micro-batches consumed (the data position), so a run may
    resume with a different number of processes.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if n < 1:
            raise ValueError("the dataset is empty")
        if batch_size % world:
            raise ValueError(f"batch_size {batch_size} is not divisible by the {world} processes")
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.batch_size = batch_size // world  # this rank's share of every micro-batch
        self._perm: tuple[int, torch.Tensor] | None = None

    def permutation(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = (epoch, torch.randperm(self.n, generator=g))
        return self._perm[1]

    def indices(self, position: int) -> torch.Tensor:
        """Example indices of micro-batch number ``position`` for this rank."""
        start = (position * self.world + self.rank) * self.batch_size  # = position * global + rank * share
        out = []
        while len(out) < self.batch_size:
            epoch, offset = divmod(start + len(out), self.n)
            take = min(self.batch_size - len(out), self.n - offset)
            out.extend(self.permutation(epoch)[offset : offset + take].tolist())
        return torch.tensor(out)


def lm_loss(model: torch.nn.Module, batch: torch.Tensor) -> dict:
    r"""Next-token cross-entropy $-\frac1N \sum_t \log p_\theta(x_{t+1} \mid x_{\le t})$ over a window batch."""
    inputs, targets = batch[:, :-1], batch[:, 1:]  # [b, T]
    loss = next_token_nll(model(inputs), targets).mean()  # evaluate.loss: the one next-token loss
    return {"loss": loss, "tokens": targets.numel()}


def read_metrics(out_dir: str | os.PathLike) -> list[dict]:
    """The records a run logged to ``out_dir/metrics.jsonl``, in order ([] before its first log line)."""
    file = Path(out_dir) / "metrics.jsonl"
    if not file.is_file():
        return []
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


def finished(out_dir: str | os.PathLike, steps: int) -> bool:
    """Whether the run in ``out_dir`` has a checkpoint at step ``steps`` or later (then ``fit`` has nothing to do)."""
    state = Path(out_dir) / CHECKPOINT / STATE_FILE
    return state.is_file() and json.loads(state.read_text())["step"] >= steps


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_interrupts():
    """Inside the block SIGTERM raises ``KeyboardInterrupt``, as Ctrl-C does, so that ``kill``, Slurm's preemption
    or time limit, or torchrun stopping its workers, end a run through ``fit``'s path: a checkpoint, then exit."""
    main = threading.current_thread() is threading.main_thread()  # (signals reach the main thread only)
    if not main or signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:  # (a process that ignores it, still does)
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)  # (None: not set in Python)


@contextlib.contextmanager
def held_signals(on_signal: Callable[[], None]):
    """Inside the block Ctrl-C (SIGINT) and SIGTERM call ``on_signal()`` instead of interrupting; a signal the
    process ignores (SIGINT in a job started in the background) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, lambda *_: on_signal())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # (None: not set from Python)


def compile_problem(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot run on ``device`` here, or None when it can.

    Inductor writes C++ for the CPU (a compiler must be on PATH) and Triton kernels for CUDA;
    other devices (MPS) train eagerly.
    """
    if device.type == "cpu":
        return None if any(shutil.which(c) for c in ("c++", "g++", "clang++")) else "no C++ compiler on PATH"
    if device.type == "cuda":
        return None if importlib.util.find_spec("triton") else "triton is not installed"
    return f"not supported on {device.type}"


def precision(cfg: TrainConfig, device: torch.device) -> str:
    """ "bf16" or "fp32": ``cfg.precision``, with "auto" = bf16 on a CUDA device that has it."""
    if cfg.precision != "auto":
        return cfg.precision
    native = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    return "bf16" if native else "fp32"  # (a pre-Ampere GPU only emulates bf16: slower than fp32)


# ----------------------------------------------------------------------------- engine
class Trainer:
    """Runs ``cfg.steps`` optimizer steps of ``loss_fn`` over ``train_data``, resuming from ``out_dir``."""

    SETTINGS: tuple[str, str] | None = None  # (state key, name): a stage's own settings, ``self.settings``
    SHARDABLE = True  # False: a stage that reads parts of the model outside its forward cannot use FSDP2

    def __init__(
        self,
        model: Ministral3,
        cfg: TrainConfig,
        train_data,
        out_dir: str | os.PathLike,
        val_data=None,
        loss_fn: Callable[[torch.nn.Module, Any], dict] = lm_loss,
        device: str | torch.device | None = None,
        val_loss_fn: Callable[[torch.nn.Module, Any], dict] | None = None,
        extra_files: dict[str, Path] | None = None,
        desc: str = "train",
        lr_scale: Callable[[str], float] | None = None,
    ):
        self.cfg, self.loss_fn, self.desc = cfg, loss_fn, desc
        self.lr_scale = lr_scale or (lambda name: 1.0)
        self.val_loss_fn = val_loss_fn
        self.out = Path(out_dir)
        self.device = torch.device(device) if device else default_device()
        if cfg.compile and (problem := compile_problem(self.device)):
            print(f"minimistral: torch.compile is off ({problem}); training eagerly", file=sys.stderr)
            self.cfg = cfg = dataclasses.replace(cfg, compile=False)
        self.rank, self.world = rank_world()
        self.sharded = cfg.fsdp and self.world > 1  # FSDP2 (one process: nothing to shard over)
        if self.sharded and not self.SHARDABLE:
            print(f"minimistral: {desc} cannot be sharded; FSDP2 is off, the model is replicated", file=sys.stderr)
            self.sharded = False
        if self.sharded and cfg.compile:
            print("minimistral: torch.compile with FSDP2 is not tested here; training eagerly", file=sys.stderr)
            self.cfg = cfg = dataclasses.replace(cfg, compile=False)
        if isinstance(model, FSDPModule) and not self.sharded:
            raise ValueError(f"{desc}: the model holds FSDP2 shards (hub.load_sharded) but this run does not shard")
        self.model = model.to(self.device)
        if not isinstance(model, FSDPModule):  # (a model loaded sharded holds every rank's own part already)
            broadcast_parameters(self.model)  # every rank starts from rank 0's weights
        self.train_model = self.wrap_model(self.model)
        self.train_data, self.val_data = train_data, val_data
        self.sampler = Sampler(len(train_data), cfg.batch_size, cfg.seed, self.rank, self.world)
        self.optimizer = self.build_optimizer()
        self.extra_files = extra_files or {}
        self.step = 0
        self.tokens = 0

    # --- pieces a later stage may override -------------------------------------------
    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module that runs forward/backward: ``model`` itself, its blocks checkpointed on request,
        sharded in place with ``fsdp`` (and the loss's frozen teacher too, if it has one), compiled on request.

        Compiling drops the graphs of earlier models first: every stage of a run trains a new model
        through the same ``forward``, and without the reset dynamo stops compiling it (and trains
        eagerly) once ``recompile_limit`` (8) is reached: the default cascade hit it in its second stage.
        """
        set_activation_checkpointing(model, self.cfg.activation_checkpointing)
        if self.sharded:
            bf16 = self.precision() == "bf16"
            if not isinstance(model, FSDPModule):
                shard(model, bf16)
            teacher = getattr(self.loss_fn, "teacher", None)  # DistillLoss, ResponseDistillLoss
            if teacher is not None and not isinstance(teacher, FSDPModule):
                if is_sharded(teacher):
                    raise ValueError("teacher: holds FSDP2 shards of a model sharded earlier (shared weights); "
                                     "give this run its own copy (from_pretrained)")  # fmt: skip
                shard(teacher.to(self.device), bf16)
        if not self.cfg.compile:
            return model
        torch.compiler.reset()
        return torch.compile(model)

    def build_optimizer(self) -> torch.optim.Optimizer:
        """AdamW over the parameters that require grad; weight decay on matrices only (not on norm gains);
        ``lr_scale(name)`` multiplies a parameter's learning rate; one fused kernel on CUDA and when compiling."""
        groups: dict[tuple[bool, float], list] = {}
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                groups.setdefault((p.ndim >= 2, float(self.lr_scale(name))), []).append(p)
        groups = [
            {"params": ps, "weight_decay": self.cfg.weight_decay if matrix else 0.0, "lr_scale": scale}
            for (matrix, scale), ps in sorted(groups.items(), key=lambda kv: (not kv[0][0], -kv[0][1]))
        ]
        kernel = {"fused": True} if self.cfg.compile or self.device.type == "cuda" else {"foreach": True}
        return torch.optim.AdamW(groups, lr=self.cfg.lr, betas=(self.cfg.beta1, self.cfg.beta2), **kernel)

    def precision(self) -> str:
        return precision(self.cfg, self.device)

    def autocast(self):
        if self.precision() == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    # --- the loop ---------------------------------------------------------------------
    def fit(self, max_steps: int | None = None) -> list[dict]:
        """Train to ``cfg.steps``, resuming from ``out_dir/checkpoint`` if present. Returns the metrics.

        ``max_steps``: stop (with a checkpoint) after that many steps of the same run, e.g. a smoke test;
        the schedule is still ``cfg.steps`` long, so running again without it continues exactly.
        """
        self.out.mkdir(parents=True, exist_ok=True)
        stop = self.cfg.steps if max_steps is None else min(max_steps, self.cfg.steps)
        if self.checkpoint_dir() is not None:
            self.resume()
            if self.step >= stop:
                return self.metrics()  # already finished: nothing to redo
        self._trim_metrics()
        barrier()  # no rank reads the metrics before rank 0 has trimmed them
        main = self.rank == 0
        bar = tqdm(total=self.cfg.steps, initial=self.step, desc=self.desc, disable=not main or None, unit="step")
        window = _Window()  # sums since the last log line
        self.stop_requested = False  # set by a signal inside ``uninterruptible``: stop after this step
        try:
            with sigterm_interrupts():  # (SIGTERM as Ctrl-C; the checkpoint below is written with SIGTERM restored)
                while self.step < stop:
                    window.add(*self.train_step())
                    if self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps:
                        record = {"step": self.step, **window.means(), "lr": lr_at(self.step - 1, self.cfg)}
                        record |= {"tokens": self.tokens, "tok_per_s": window.tokens / max(window.elapsed(), 1e-9)}
                        self.log(record)
                        bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tok_per_s']:.0f}")
                        window = _Window()
                    if self.val_data is not None and self.step % self.cfg.eval_every == 0:
                        self.log({"step": self.step, "val_loss": self.evaluate()})
                    if self.step % self.cfg.ckpt_every == 0 and self.step < self.cfg.steps:
                        self.save()
                    bar.update(1)
                    if self.stop_requested:
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            bar.close()
            if main and not self.sharded:  # (sharded: the other ranks may be gone; the last checkpoint stands)
                self.write_checkpoint()
                print(f"\ninterrupted: checkpoint at step {self.step} in {self.out / CHECKPOINT}; run again to resume")
            raise
        bar.close()
        if self.step == self.cfg.steps and self.val_data is not None and self.step % self.cfg.eval_every != 0:
            self.log({"step": self.step, "val_loss": self.evaluate()})
        self.save()
        return self.metrics()

    @contextlib.contextmanager
    def uninterruptible(self):
        """A Ctrl-C or SIGTERM inside the block stops the run after this step (logged, then checkpointed) instead
        of inside the block: what the block changes (an RL iteration's optimizer steps) is never split."""
        with held_signals(lambda: setattr(self, "stop_requested", True)):
            yield

    def apply_lr(self) -> float:
        """Set this step's learning rate (``lr_at``) on every parameter group, times its ``lr_scale``."""
        lr = lr_at(self.step, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # checkpoints before lr_scale: 1
        return lr

    def train_step(self) -> tuple[dict[str, float], int]:
        """One optimizer step over ``grad_accum`` micro-batches; returns (mean loss and extra scalars, tokens).

        With several processes, rank r's loss (a mean over its ``tokens`` n_r) is weighted by n_r / sum_r n_r and
        the gradients are summed over ranks: the gradient of the mean over every token of the micro-batch.
        """
        self.apply_lr()
        self.train_model.train()
        totals: dict[str, float] = {}
        total_tokens = 0
        for micro in range(self.cfg.grad_accum):
            position = self.step * self.cfg.grad_accum + micro  # the data position
            batch = _to(self.train_data.batch(self.sampler.indices(position)), self.device)
            with self.autocast():
                out = self.loss_fn(self.train_model, batch)
            loss, shares, tokens = self.rank_loss(out)  # out["loss"], {} and n with one process
            (loss / self.cfg.grad_accum).backward()
            for key, value in _scalars(out).items():
                value = float(loss.detach()) if key == "loss" else value * shares.get(key, shares["loss"])
                totals[key] = totals.get(key, 0.0) + value / self.cfg.grad_accum
            total_tokens += tokens
        self.update()
        self.step += 1
        self.tokens += total_tokens
        return self.sum_scalars(totals), total_tokens

    def update(self) -> None:
        """One optimizer step on the gradients of this step: summed over ranks, clipped, applied, cleared."""
        if not self.sharded:  # (FSDP2 has summed them, each rank keeping its shard)
            sum_gradients(self.model.parameters())
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def rank_loss(self, out: dict) -> tuple[torch.Tensor, dict[str, float], int]:
        """(this rank's weighted share of the micro-batch's loss, each scalar's weight, tokens over all ranks).

        The loss is a mean over this rank's ``out["tokens"]`` n_r, weighted by n_r / sum_r n_r. A loss that adds
        means over different tokens (``out["parts"]``: name -> (mean, count), e.g. a response loss plus text
        windows, ``distill.response_loss``) has each mean weighted by this rank's share of its own count, so
        that the sum over ranks is the one-process loss whichever ranks hold which tokens.
        """
        if self.world == 1 or "parts" not in out:
            weight, tokens = self.token_weight(out["tokens"])  # 1.0 and n with one process
            return out["loss"] * weight, {"loss": weight}, tokens
        names, parts = list(out["parts"]), list(out["parts"].values())
        mine = [float(out["tokens"])] + [float(count) for _, count in parts]
        totals = all_sum(torch.tensor(mine, dtype=torch.float64)).tolist()  # one collective for every count
        share = [m / t if t else 0.0 for m, t in zip(mine, totals, strict=True)]
        weight, tokens, shares = share[0], int(totals[0]), dict(zip(names, share[1:], strict=True))
        loss = sum(mean * shares[name] for name, (mean, _) in zip(names, parts, strict=True))
        return loss, shares | {"loss": weight}, tokens

    def token_weight(self, tokens: int) -> tuple[float, int]:
        """(this rank's share of the micro-batch's tokens, the micro-batch's tokens over all ranks)."""
        if self.world == 1:
            return 1.0, int(tokens)
        everyone = int(all_sum(torch.tensor(float(tokens), dtype=torch.float64)))
        return (tokens / everyone if everyone else 0.0), everyone

    def sum_scalars(self, totals: dict[str, float]) -> dict[str, float]:
        """Token-weighted scalars summed over ranks (each rank's are already weighted by its share)."""
        if self.world == 1 or not totals:
            return totals
        summed = all_sum(torch.tensor(list(totals.values()), dtype=torch.float64))
        return dict(zip(totals, summed.tolist(), strict=True))

    @torch.no_grad()
    def evaluate(self) -> float:
        """Token-weighted mean of ``val_loss_fn`` (default: the training loss) over fixed validation micro-batches."""
        self.train_model.eval()
        loss_fn = self.val_loss_fn or self.loss_fn
        n = min(len(self.val_data), self.cfg.eval_batches * self.cfg.batch_size)
        loss_sum, tokens = 0.0, 0
        for rows, weight in self.validation_rows(n):
            batch = _to(self.val_data.batch(rows), self.device)
            with self.autocast():
                out = loss_fn(self.train_model, batch)
            loss_sum += out["loss"].item() * out["tokens"] * weight
            tokens += out["tokens"] * weight
        if self.world > 1:
            loss_sum, tokens = all_sum(torch.tensor([loss_sum, tokens], dtype=torch.float64)).tolist()
        return loss_sum / max(tokens, 1)

    def validation_rows(self, n: int):
        """(rows, weight) of the first ``n`` validation examples this rank scores, in batches of ``batch_size``.

        Replicated models share out whole batches. Sharded ones must all run every forward (each gathers
        the weights from every rank), so each rank takes its slice of every batch; a rank whose slice of
        the last batch is empty scores one row with weight 0.
        """
        starts = range(0, n, self.cfg.batch_size)
        if not self.sharded:
            for start in starts[self.rank :: self.world]:
                yield torch.arange(start, min(n, start + self.cfg.batch_size)), 1
            return
        for start in starts:
            rows = torch.arange(start, min(n, start + self.cfg.batch_size))[self.rank :: self.world]
            yield (rows, 1) if len(rows) else (torch.arange(start, start + 1), 0)

    # --- metrics ----------------------------------------------------------------------
    @property
    def metrics_file(self) -> Path:
        return self.out / "metrics.jsonl"

    def log(self, record: dict) -> None:
        if self.rank == 0:
            with open(self.metrics_file, "a") as f:
                f.write(json.dumps(record) + "\n")

    def metrics(self) -> list[dict]:
        return read_metrics(self.out)

    def _trim_metrics(self) -> None:
        """Drop records logged after the checkpoint we resume from (they will be logged again)."""
        if self.rank == 0 and self.metrics_file.exists():
            kept = [json.dumps(r) + "\n" for r in self.metrics() if r["step"] <= self.step]
            atomic_write(self.metrics_file, "".join(kept).encode())

    # --- checkpoints ------------------------------------------------------------------
    def checkpoint_dir(self) -> Path | None:
        """The latest complete checkpoint (``checkpoint/``, or ``checkpoint.old/`` after a crash mid-swap)."""
        for name in (CHECKPOINT, CHECKPOINT + ".old"):
            d = self.out / name
            if (d / STATE_FILE).is_file():
                return d
        return None

    def state(self) -> dict:
        settings = {self.SETTINGS[0]: dataclasses.asdict(self.settings)} if self.SETTINGS else {}
        return settings | {
            "step": self.step,
            "tokens": self.tokens,
            "data_position": self.step * self.cfg.grad_accum,  # micro-batches consumed
            "lr_next": lr_at(self.step, self.cfg),
            "train_config": dataclasses.asdict(self.cfg),
            "model_config": self.model.config.to_hf_dict(),
            "num_examples": len(self.train_data),
            "world_size": self.world,
        }

    def save(self) -> Path:
        """Rank 0 writes the checkpoint (:meth:`write_checkpoint`); every rank waits until it is in place.
        Sharded, every rank first takes part in gathering the whole weights and optimizer state."""
        gathered = self.gather() if self.sharded else {}
        if self.rank == 0:
            self.write_checkpoint(**gathered)
        barrier()
        return self.out / CHECKPOINT

    def gather(self) -> dict:
        """The whole weights and optimizer state, gathered tensor by tensor onto the CPU (every rank calls
        this; ranks other than 0 drop what they gathered): ``{"weights", "optimizer"}`` for :meth:`write_checkpoint`."""
        keep = self.rank == 0

        def gathered(items) -> dict:  # every rank gathers each tensor in turn; only rank 0 holds on to it
            out = {}
            for key, value in items:
                value = full(value) if torch.is_tensor(value) else value
                if keep:
                    out[key] = value
            return out

        weights = gathered(self.model.state_dict().items())
        state = self.optimizer.state_dict()
        state["state"] = {i: gathered(moments.items()) for i, moments in state["state"].items()}
        return {"weights": weights, "optimizer": state}

    def write_checkpoint(self, weights: dict | None = None, optimizer: dict | None = None) -> Path:
        """Write weights (HF format), optimizer, RNG and trainer state to a temp dir, then swap it in.
        ``weights``, ``optimizer``: gathered by :meth:`gather` (default: the model's and optimizer's own)."""
        final = self.out / CHECKPOINT
        tmp = self.out / (CHECKPOINT + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        optimizer = optimizer or self.optimizer.state_dict()
        save_pretrained(self.model, tmp, state=weights)
        tensors = _flatten_optimizer(optimizer)
        tensors["rng.cpu"] = torch.get_rng_state()
        if torch.cuda.is_available():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        atomic_write(tmp / OPTIMIZER_FILE, tensors)
        groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer["param_groups"]]
        atomic_write(tmp / STATE_FILE, json.dumps(self.state() | {"param_groups": groups}, indent=2).encode())
        for name, src in self.extra_files.items():
            shutil.copy2(src, tmp / name)
        old = self.out / (CHECKPOINT + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        return final

    def resume(self) -> None:
        """Restore weights, optimizer, RNG and position from the latest checkpoint."""
        d = self.checkpoint_dir()
        try:
            state = json.loads((d / STATE_FILE).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ResumeError(f"{d / STATE_FILE}: not readable JSON ({exc}); delete {d} to start over") from None
        self._check_compatible(state, d / STATE_FILE)
        from minimistral.arch.hub import read_tensors

        with torch.no_grad():
            params = dict(self.model.named_parameters())
            for name, _, _, tensor in read_tensors(d, vision=True):
                if name in params:
                    params[name].copy_(like(tensor, params[name]))
        try:
            self._load_optimizer(d / OPTIMIZER_FILE, state)
        except SafetensorError as exc:
            raise ResumeError(f"{d / OPTIMIZER_FILE}: unreadable ({exc}); delete {d} to start over") from None
        self.step, self.tokens = state["step"], state["tokens"]

    def _load_optimizer(self, file: Path, state: dict) -> None:
        """The optimizer's moments and the RNG states, each moment laid out as its parameter."""
        order = [p for g in self.optimizer.param_groups for p in g["params"]]  # state_dict's numbering
        moments: dict[int, dict] = {}
        with safe_open(str(file), framework="pt") as f:  # one tensor at a time, never all at once
            torch.set_rng_state(f.get_tensor("rng.cpu"))
            names = f.keys()
            if "rng.cuda" in names and torch.cuda.is_available():
                torch.cuda.set_rng_state(f.get_tensor("rng.cuda"))
            for name in (n for n in names if n.startswith("state.")):  # state.<i>.<key>
                _, i, key = name.split(".", 2)
                value = f.get_tensor(name)  # laid out as its parameter (this rank's shard, under FSDP2)
                moments.setdefault(int(i), {})[key] = value if key == "step" else like(value, order[int(i)])
        opt_state = {"state": moments}
        opt_state["param_groups"] = [
            g | {key: ours[key] for key in ("params", "fused", "foreach") if key in ours}  # this device's kernel
            for g, ours in zip(state["param_groups"], self.optimizer.state_dict()["param_groups"], strict=True)
        ]
        self.optimizer.load_state_dict(opt_state)

    def _check_compatible(self, state: dict, file: Path) -> None:
        saved, now = state["train_config"], dataclasses.asdict(self.cfg)
        for key in now:
            if key not in TrainConfig.RESUMABLE_CHANGES and saved.get(key) != now[key]:
                raise ResumeError(
                    f"{file}: cannot resume: train config {key!r} was {saved.get(key)!r}, now {now[key]!r}"
                )
        model_now = self.model.config.to_hf_dict()
        for key in model_now:
            if state["model_config"].get(key) != model_now[key]:
                raise ResumeError(
                    f"{file}: cannot resume: model config {key!r} was {state['model_config'].get(key)!r}, "
                    f"now {model_now[key]!r}"
                )
        if state["num_examples"] != len(self.train_data):
            raise ResumeError(f"{file}: cannot resume: num_examples was {state['num_examples']}, now "
                              f"{len(self.train_data)} (different data?)")  # fmt: skip
        if self.SETTINGS:
            key, name = self.SETTINGS
            if state.get(key) != dataclasses.asdict(self.settings):
                raise ResumeError(f"{file}: cannot resume: {name} was {state.get(key)}, now {self.settings}")


def _scalars(out: dict) -> dict[str, float]:
    """The loss and every other scalar a loss function returned (not "tokens"), as floats."""
    return {
        k: float(v.detach()) if torch.is_tensor(v) else float(v)
        for k, v in out.items()
        if k != "tokens" and (isinstance(v, int | float) or (torch.is_tensor(v) and v.numel() == 1))
    }


class _Window:
    """Running sums of the logged scalars between two log lines."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.steps, self.tokens, self.start = 0, 0, time.perf_counter()

    def add(self, scalars: dict[str, float], tokens: int) -> None:
        for key, value in scalars.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.steps, self.tokens = self.steps + 1, self.tokens + tokens

    def means(self) -> dict[str, float]:
        return {key: value / self.steps for key, value in self.sums.items()}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def _to(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch


def _flatten_optimizer(state_dict: dict) -> dict[str, torch.Tensor]:
    """{'state': {i: {'exp_avg': t, ...}}} -> {'state.i.exp_avg': t} (safetensors holds flat tensors only)."""
    out = {}
    for i, s in state_dict["state"].items():
        for k, v in s.items():
            out[f"state.{i}.{k}"] = v.detach().to("cpu").contiguous() if torch.is_tensor(v) else torch.tensor(v)
    return out
