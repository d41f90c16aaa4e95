"""Cascade Distillation: the parent, pruned and distilled into tiny-14b, tiny-8b, tiny-3b (paper 3.1, Algorithm 1).

Algorithm 1, with our tiny family standing in for the real one::

    model = parent                                   # tiny-24b, plain RoPE, 256-token window
    for child in [tiny-14b, tiny-8b, tiny-3b]:
        model = prune(model, child)                  # "<child> Init"  (Algorithm 2)
        model = distill(model, short windows)        # "<child> Short" (256 tokens)
        base[child] = distill(model + YaRN, long windows)   # "<child> Base" (1,024 tokens)

* The next child is pruned from the *Short* checkpoint, not the long-context one.
* The teacher of every stage is the parent; the loss is forward KL on logits alone.
* The training stream is cut into consecutive, disjoint slices, one per stage, so the
  data is traversed once without repetition, with pruning on the way; the calibration
  windows of each prune are the first windows of the slice that follows it.
* tiny-24b -> tiny-14b prunes the FFN only (as 24B -> 14B); the next two prune layers,
  hidden size and FFN. tiny-3b ties its embeddings, as the 3B does.
* The long-context stage switches on YaRN (x4 over the 256-token window) and the
  position-based temperature: after it, each child has exactly its config in
  ``TINY_CONFIGS``.

Every stage writes a standard checkpoint (``runs/cascade-<scale>/<child>-<stage>/checkpoint``)
that ``transformers`` loads. ``run_cascade`` skips finished stages and resumes an unfinished
one exactly where it stopped, so the whole cascade resumes from any stage.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from einops import rearrange

from minimistral.config import TINY_CONFIGS, TINY_WINDOW
from minimistral.data import Corpus, build_corpus, windows
from minimistral.distill import DistillLoss, distill
from minimistral.hub import from_pretrained, save_pretrained
from minimistral.model import Ministral3, default_device
from minimistral.params import count_parameters
from minimistral.prune import prune
from minimistral.train import CHECKPOINT, STATE_FILE, TrainConfig, Windows, lm_loss

PARENT = "tiny-24b"
CHILDREN = ("tiny-14b", "tiny-8b", "tiny-3b")
KINDS = ("init", "short", "long")
PAPER_NAME = {"init": "Init", "short": "Short", "long": "Base"}  # Figure 1's names of the checkpoints
LONG_FACTOR = 4  # YaRN factor of the tiny children: 256 -> 1,024 tokens


@dataclass(frozen=True)
class CascadeScale:
    """Steps and batch shapes of every stage. A short step and a long step see the same number of tokens."""

    short_steps: int
    long_steps: int
    batch_size: int = 16  # short windows of 256 tokens per step
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 10
    long_lr: float = 5e-4
    calib_windows: int = 32  # training windows that calibrate each prune
    eval_every: int = 25
    eval_batches: int = 4
    ckpt_every: int = 25
    kd_temperature: float = 1.0  # not given by the paper

    @property
    def long_batch_size(self) -> int:
        return max(1, self.batch_size // LONG_FACTOR)


SCALES = {
    "ci": CascadeScale(
        short_steps=6, long_steps=2, batch_size=4, warmup_steps=2, calib_windows=8, eval_every=3, eval_batches=2,
        ckpt_every=3,
    ),
    "default": CascadeScale(short_steps=100, long_steps=25),
}  # fmt: skip


def get_scale(scale: str | CascadeScale) -> CascadeScale:
    if isinstance(scale, CascadeScale):
        return scale
    if scale not in SCALES:
        raise ValueError(f"unknown cascade scale {scale!r}; choose from {', '.join(SCALES)}")
    return SCALES[scale]


def cascade_dir(scale: str) -> Path:
    """``runs/cascade-<scale>`` (git-ignored) in the checkout."""
    from minimistral.pretrain import _checkout_or_cwd

    return _checkout_or_cwd() / "runs" / f"cascade-{scale}"


@dataclass(frozen=True)
class Stage:
    """One checkpoint of Figure 1: ``<child> Init`` (pruned), ``Short`` or ``Base`` (after the long stage)."""

    child: str
    kind: str  # init | short | long

    @property
    def name(self) -> str:
        return f"{self.child}-{self.kind}"

    @property
    def paper_name(self) -> str:
        return f"{self.child} {PAPER_NAME[self.kind]}"


STAGES = tuple(Stage(child, kind) for child in CHILDREN for kind in KINDS)


def stage_named(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise ValueError(f"unknown stage {name!r}; stages: {', '.join(s.name for s in STAGES)}")


# ----------------------------------------------------------------------------- data
@dataclass
class CascadeData:
    """The one training stream, cut into per-stage slices, and the held-out windows."""

    short: torch.Tensor  # [n, 257] training windows in stream order
    long: torch.Tensor  # [m, 1025] training windows of whole books concatenated
    val: torch.Tensor  # [v, 257] held-out windows, sources interleaved (periodic validation)
    val_long: torch.Tensor  # [w, 1025] held-out long windows


def cascade_data(corpus: Corpus, scale: CascadeScale) -> CascadeData:
    """Short windows from the pretraining stream, long windows from whole training books, held-out windows."""
    from minimistral.longctx import long_documents
    from minimistral.pretrain import validation_windows

    per_source = validation_windows(corpus, TINY_WINDOW, per_source=scale.eval_batches * scale.batch_size)
    val = rearrange(torch.stack(list(per_source.values())), "source n t -> (n source) t")
    long_len = LONG_FACTOR * TINY_WINDOW
    return CascadeData(
        short=windows(corpus.train, TINY_WINDOW),
        long=long_documents(corpus, "train", long_len),
        val=val,
        val_long=long_documents(corpus, "validation", long_len),
    )


def stream_slice(stage: Stage, scale: CascadeScale, data: CascadeData) -> torch.Tensor:
    """The windows a training stage consumes: consecutive and disjoint across the cascade (no repetition)."""
    short = stage.kind == "short"
    stream = data.short if short else data.long
    per_stage = scale.short_steps * scale.batch_size if short else scale.long_steps * scale.long_batch_size
    k = CHILDREN.index(stage.child)
    start, end = k * per_stage, (k + 1) * per_stage
    if end > stream.shape[0]:
        raise ValueError(
            f"the {'short' if short else 'long'} training stream has {stream.shape[0]} windows; stage "
            f"{stage.name} needs windows {start}..{end}: lower the steps or batch size of the scale"
        )
    return stream[start:end]


def calibration(stage: Stage, scale: CascadeScale, data: CascadeData, batch_size: int = 8) -> list[torch.Tensor]:
    """Inputs ``[b, 256]`` of the first windows of the slice the pruned child trains on next."""
    calib = stream_slice(Stage(stage.child, "short"), scale, data)[: scale.calib_windows, :-1]
    return list(calib.split(batch_size))


# ----------------------------------------------------------------------------- stages
def prune_to(model: Ministral3, child: str, calib: list[torch.Tensor]) -> Ministral3:
    """Algorithm 2 from ``model`` to the shape of ``child``; only the dimensions that differ are pruned."""
    target = TINY_CONFIGS[child]
    pruned = prune(
        model,
        calib,
        num_layers=target.num_hidden_layers,
        hidden_size=target.hidden_size,
        intermediate_size=target.intermediate_size,
        tie_word_embeddings=True if target.tie_word_embeddings and not model.config.tie_word_embeddings else None,
    )
    if count_parameters(pruned.config) != count_parameters(target):
        raise AssertionError(f"pruned {child}: {pruned.config} does not have the shape of {target}")
    return pruned


def with_long_context(model: Ministral3) -> Ministral3:
    """The same weights with the children's long-context positions: YaRN x4 over 256 tokens, temperature on."""
    from minimistral.longctx import rescaled

    return rescaled(model, method="yarn", temperature=True, factor=LONG_FACTOR, original=TINY_WINDOW)


def train_config(stage: Stage, scale: CascadeScale) -> TrainConfig:
    short = stage.kind == "short"
    return TrainConfig(
        steps=scale.short_steps if short else scale.long_steps,
        batch_size=scale.batch_size if short else scale.long_batch_size,
        lr=scale.lr if short else scale.long_lr,
        min_lr=scale.min_lr,
        warmup_steps=min(scale.warmup_steps, (scale.short_steps if short else scale.long_steps) // 2),
        eval_every=scale.eval_every,
        eval_batches=scale.eval_batches,
        ckpt_every=scale.ckpt_every,
        log_every=1,
    )


class Cascade:
    """Runs Algorithm 1 stage by stage under ``root``; every stage is skipped when finished, resumed when not."""

    def __init__(
        self, parent_checkpoint: str | Path, root: str | Path, scale: str | CascadeScale = "default", device=None
    ):
        self.scale = get_scale(scale)
        self.scale_name = scale if isinstance(scale, str) else "custom"
        self.root, self.parent_checkpoint = Path(root), Path(parent_checkpoint)
        self.device = torch.device(device) if device else default_device()
        self._parent: Ministral3 | None = None
        self._data: CascadeData | None = None
        self._corpus: Corpus | None = None

    # --- lazily built inputs ------------------------------------------------------------
    @property
    def corpus(self) -> Corpus:
        if self._corpus is None:
            self._corpus = build_corpus()
        return self._corpus

    @property
    def data(self) -> CascadeData:
        if self._data is None:
            self._data = cascade_data(self.corpus, self.scale)
        return self._data

    @property
    def parent(self) -> Ministral3:
        if self._parent is None:
            self._parent = from_pretrained(self.parent_checkpoint, device=self.device).eval()
        return self._parent

    # --- where things are ------------------------------------------------------------------
    def stage_dir(self, stage: Stage) -> Path:
        return self.root / stage.name

    def checkpoint(self, stage: Stage) -> Path:
        return self.stage_dir(stage) / CHECKPOINT

    def is_done(self, stage: Stage) -> bool:
        state = self.checkpoint(stage) / STATE_FILE
        if stage.kind == "init":
            return (self.checkpoint(stage) / "config.json").is_file()
        return state.is_file() and json.loads(state.read_text())["step"] >= train_config(stage, self.scale).steps

    def source_of(self, stage: Stage) -> Path:
        """The checkpoint a stage starts from: the previous Short (or the parent) for Init, else the stage before."""
        k = CHILDREN.index(stage.child)
        if stage.kind == "init":
            return self.parent_checkpoint if k == 0 else self.checkpoint(Stage(CHILDREN[k - 1], "short"))
        return self.checkpoint(Stage(stage.child, KINDS[KINDS.index(stage.kind) - 1]))

    # --- running ---------------------------------------------------------------------------
    def run(self, until: str | None = None) -> dict[str, Path]:
        """Every stage in order (up to and including ``until``); returns stage name -> checkpoint."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.write_plan()
        out = {}
        for stage in STAGES:
            if not self.is_done(stage):
                self.run_stage(stage)
            out[stage.name] = self.checkpoint(stage)
            if stage.name == until:
                break
        return out

    def restart_from(self, name: str) -> None:
        """Delete the checkpoints of stage ``name`` and of every stage after it (they are trained again)."""
        first = STAGES.index(stage_named(name))
        for stage in STAGES[first:]:
            shutil.rmtree(self.stage_dir(stage), ignore_errors=True)

    def run_stage(self, stage: Stage) -> Path:
        if stage.kind == "init":
            return self.prune_stage(stage)
        return self.distill_stage(stage)

    def prune_stage(self, stage: Stage) -> Path:
        source = from_pretrained(self.source_of(stage), device=self.device)
        calib = [b.to(self.device) for b in calibration(stage, self.scale, self.data)]
        pruned = prune_to(source, stage.child, calib)
        final, tmp = self.checkpoint(stage), self.stage_dir(stage) / (CHECKPOINT + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        save_pretrained(pruned, tmp)
        shutil.copy2(self.corpus.tokenizer_path, tmp / "tokenizer.json")
        tmp.rename(final)
        return final

    def distill_stage(
        self, stage: Stage, student: Ministral3 | None = None, out: Path | None = None, desc: str | None = None
    ) -> Path:
        """A Short or Base stage. ``student``/``out``/``desc`` let an ablation rerun the same stage otherwise."""
        short = stage.kind == "short"
        if student is None:
            student = from_pretrained(self.source_of(stage), device=self.device)
            student = student if short else with_long_context(student)
        teacher = self.parent if short else self.long_teacher()
        return distill(
            student,
            teacher,
            Windows(stream_slice(stage, self.scale, self.data)),
            out or self.stage_dir(stage),
            train_config(stage, self.scale),
            val_data=Windows(self.data.val if short else self.data.val_long[: self.scale.eval_batches]),
            loss=DistillLoss(teacher, temperature=self.scale.kd_temperature),
            val_loss_fn=lm_loss,
            extra_files={"tokenizer.json": self.corpus.tokenizer_path},
            desc=desc or f"{stage.paper_name} ({self.scale_name})",
            device=self.device,
        )

    def long_teacher(self) -> Ministral3:
        """The parent for long windows: see ``longctx.long_context_teacher`` (measured choice)."""
        from minimistral.longctx import long_context_teacher

        return long_context_teacher(self.parent)

    def write_plan(self) -> None:
        """``plan.json``: the scale and which windows of the stream every stage consumes."""
        plan = {"scale": self.scale_name, "settings": asdict(self.scale), "parent": str(self.parent_checkpoint)}
        plan["stages"] = [{"stage": s.name, "paper": s.paper_name} for s in STAGES]
        (self.root / "plan.json").write_text(json.dumps(plan, indent=2))


# ----------------------------------------------------------------------------- Figure 2
def training_curve(root: str | Path) -> Iterator[dict]:
    """Every logged training step of the cascade in order, with the stage and the cumulative tokens.

    Keys: stage, paper, step, tokens (cumulative over the cascade), loss (the KD loss),
    ntp (the student's next-token cross-entropy on the training batch), teacher_ce.
    """
    offset = 0
    for stage in STAGES:
        if stage.kind == "init":
            continue
        metrics = Path(root) / stage.name / "metrics.jsonl"
        if not metrics.is_file():
            return
        last = 0
        for line in metrics.read_text().splitlines():
            record = json.loads(line)
            if "loss" in record:
                last = record["tokens"]
                yield {"stage": stage.name, "paper": stage.paper_name, **record, "tokens": offset + record["tokens"]}
        offset += last
