"""Cascade Distillation's three steps per child: prune, distil short, extend long (paper §3.1, Algorithm 1).

Algorithm 1, with our tiny family standing in for the real one (``minimistral.reproduce`` runs it)::

    source = parent                                  # tiny-24b, plain RoPE, 256-token window
    for child in [tiny-14b, tiny-8b, tiny-3b]:
        init  = cascade.prune(source, child)         # "<child> Init"  (Algorithm 2)
        short = cascade.distil_short(init, child)    # "<child> Short" (256-token windows)
        base  = cascade.extend_long(short, child)    # "<child> Base"  (1,024 tokens, YaRN + temperature)
        source = short                               # the next child is pruned from Short, not Base

* The teacher of every stage is the parent; the loss is forward KL on logits alone (``distill``).
* The training stream is cut into consecutive, disjoint slices, one per child and window length,
  so the data is traversed once without repetition; each prune is calibrated on the first
  windows of the slice its child trains on next.
* tiny-24b -> tiny-14b prunes the FFN only (as 24B -> 14B); the next two prune layers, hidden
  size and FFN. tiny-3b ties its embeddings, as the 3B does.
* After the long stage each child has exactly its config in ``TINY_CONFIGS``.

Every step takes and returns a checkpoint directory (``runs/cascade-<scale>/<child>-<kind>/checkpoint``,
which ``transformers`` loads), returns at once when that checkpoint is finished, and resumes an
unfinished one exactly where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from einops import rearrange

from minimistral.arch.config import TINY_CONFIGS, TINY_WINDOW
from minimistral.arch.hub import from_pretrained, save_pretrained
from minimistral.arch.model import Ministral3, default_device
from minimistral.arch.params import count_parameters
from minimistral.data.corpus import Corpus, build_corpus, windows
from minimistral.distill import DistillLoss, distill
from minimistral.distributed import barrier, rank_world
from minimistral.evaluate.loss import validation_windows
from minimistral.longctx.positions import long_context_teacher, long_documents, rescaled
from minimistral.prune.heuristics import prune
from minimistral.scales import LONG_FACTOR, CascadeScale, get_scale
from minimistral.train import CHECKPOINT, TrainConfig, Windows, finished, lm_loss, read_metrics

PARENT = "tiny-24b"
CHILDREN = ("tiny-14b", "tiny-8b", "tiny-3b")
KINDS = ("init", "short", "long")
PAPER_NAME = {"init": "Init", "short": "Short", "long": "Base"}  # Figure 1's names of the checkpoints


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


STAGES = tuple(Stage(child, kind) for child in CHILDREN for kind in KINDS)  # in the order they run


def stage_named(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise ValueError(f"unknown stage {name!r}; stages: {', '.join(s.name for s in STAGES)}")


# ----------------------------------------------------------------------------- data
@dataclass
class CascadeData:
    """The one training stream in windows of both lengths, and the held-out windows."""

    short: torch.Tensor  # [n, 257] training windows in stream order
    long: torch.Tensor  # [m, 1025] training windows of whole books concatenated
    val: torch.Tensor  # [v, 257] held-out windows, sources interleaved (periodic validation)
    val_long: torch.Tensor  # [w, 1025] held-out long windows


def cascade_data(corpus: Corpus, scale: CascadeScale) -> CascadeData:
    """Short windows from the pretraining stream, long windows from whole training books, held-out windows."""
    per_source = validation_windows(corpus, TINY_WINDOW, per_source=scale.eval_batches * scale.batch_size)
    val = rearrange(torch.stack(list(per_source.values())), "source n t -> (n source) t")
    long_len = LONG_FACTOR * TINY_WINDOW
    return CascadeData(
        short=windows(corpus.train, TINY_WINDOW),
        long=long_documents(corpus, "train", long_len),
        val=val,
        val_long=long_documents(corpus, "validation", long_len),
    )


def child_slice(child: str, kind: str, scale: CascadeScale, data: CascadeData) -> torch.Tensor:
    """The windows ``child``'s ``kind`` stage trains on: slice k of the stream for the k-th child (disjoint)."""
    short = kind == "short"
    stream = data.short if short else data.long
    n = scale.short_steps * scale.batch_size if short else scale.long_steps * scale.long_batch_size
    start = CHILDREN.index(child) * n
    if start + n > stream.shape[0]:
        raise ValueError(
            f"the {kind} training stream has {stream.shape[0]} windows; {child}-{kind} needs windows "
            f"{start}..{start + n}: lower the steps or batch size of the scale"
        )
    return stream[start : start + n]


def calibration(child: str, scale: CascadeScale, data: CascadeData, batch_size: int = 8) -> list[torch.Tensor]:
    """Inputs ``[b, 256]``: the first windows of the slice the pruned child trains on next."""
    return list(child_slice(child, "short", scale, data)[: scale.calib_windows, :-1].split(batch_size))


# ----------------------------------------------------------------------------- what each step does to a model
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
    return rescaled(model, method="yarn", temperature=True, factor=LONG_FACTOR, original=TINY_WINDOW)


def train_config(kind: str, scale: CascadeScale) -> TrainConfig:
    """The engine settings of a ``short`` or ``long`` distillation stage."""
    short = kind == "short"
    steps = scale.short_steps if short else scale.long_steps
    return TrainConfig(
        steps=steps,
        batch_size=scale.batch_size if short else scale.long_batch_size,
        lr=scale.lr if short else scale.long_lr,
        min_lr=scale.min_lr,
        warmup_steps=min(scale.warmup_steps, steps // 2),
        eval_every=scale.eval_every,
        eval_batches=scale.eval_batches,
        ckpt_every=scale.ckpt_every,
        log_every=1,
        compile=scale.compile,
    )


# ----------------------------------------------------------------------------- the steps
class Cascade:
    """The cascade's steps under ``root`` for one parent and scale; each returns its checkpoint directory."""

    def __init__(
        self, parent_checkpoint: str | Path, root: str | Path, scale: str | CascadeScale = "default", device=None
    ):
        self.scale = scale if isinstance(scale, CascadeScale) else get_scale(scale).cascade
        self.scale_name = scale if isinstance(scale, str) else "custom"
        self.root, self.parent_checkpoint = Path(root), Path(parent_checkpoint)
        self.device = torch.device(device) if device else default_device()
        self._parent: Ministral3 | None = None
        self._data: CascadeData | None = None
        self._corpus: Corpus | None = None

    # --- inputs, built when first needed -------------------------------------------------
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
        """The teacher of every stage (frozen, eval mode)."""
        if self._parent is None:
            self._parent = from_pretrained(self.parent_checkpoint, device=self.device).eval()
        return self._parent

    # --- where things are ------------------------------------------------------------------
    def stage_dir(self, stage: Stage) -> Path:
        return self.root / stage.name

    def checkpoint(self, stage: Stage) -> Path:
        return self.stage_dir(stage) / CHECKPOINT

    def is_done(self, stage: Stage) -> bool:
        if stage.kind == "init":
            return (self.checkpoint(stage) / "config.json").is_file()
        return finished(self.stage_dir(stage), train_config(stage.kind, self.scale).steps)

    # --- Algorithm 1 -----------------------------------------------------------------------
    def prune(self, source: Path, child: str) -> Path:
        """``<child> Init``: ``source`` pruned to ``child``'s shape (Algorithm 2), calibrated on its next slice."""
        stage = Stage(child, "init")
        barrier()  # under torchrun every rank reads the same answer below
        if self.is_done(stage):
            return self.checkpoint(stage)
        if rank_world()[0] != 0:  # rank 0 prunes, the others wait for its checkpoint
            barrier()
            return self.checkpoint(stage)
        self.write_plan()
        model = from_pretrained(source, device=self.device)
        calib = [b.to(self.device) for b in calibration(child, self.scale, self.data)]
        pruned = prune_to(model, child, calib)
        final, tmp = self.checkpoint(stage), self.stage_dir(stage) / (CHECKPOINT + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        save_pretrained(pruned, tmp)
        shutil.copy2(self.corpus.tokenizer_path, tmp / "tokenizer.json")
        tmp.rename(final)  # atomic: a half-written Init is never mistaken for a finished one
        barrier()
        return final

    def distil_short(self, init: Path, child: str) -> Path:
        """``<child> Short``: ``init`` distilled from the parent on 256-token windows."""
        return self.distill_stage(Stage(child, "short"), lambda: from_pretrained(init, device=self.device))

    def extend_long(self, short: Path, child: str) -> Path:
        """``<child> Base``: ``short`` with YaRN x4 and the temperature, distilled on 1,024-token windows."""
        return self.distill_stage(
            Stage(child, "long"), lambda: with_long_context(from_pretrained(short, device=self.device))
        )

    def run(self) -> dict[str, Path]:
        """Algorithm 1 for every child (each finished step returns at once); returns stage name -> checkpoint."""
        source = self.parent_checkpoint
        for child in CHILDREN:
            init = self.prune(source, child)
            source = self.distil_short(init, child)
            self.extend_long(source, child)
        return {stage.name: self.checkpoint(stage) for stage in STAGES}

    def restart_from(self, name: str) -> None:
        """Delete the checkpoints of stage ``name`` and of every stage after it (they are trained again)."""
        first = STAGES.index(stage_named(name))
        for stage in STAGES[first:]:
            shutil.rmtree(self.stage_dir(stage), ignore_errors=True)

    def distill_stage(
        self, stage: Stage, student, out: Path | None = None, desc: str | None = None, seed: int = 0,
        teacher: Path | None = None,
    ) -> Path:  # fmt: skip
        """A Short or Base stage: ``student()`` (built only when there is training to do) distilled from the parent.

        ``out``, ``desc``, ``seed`` (the data order) and ``teacher`` (another checkpoint to distil from) let an
        ablation rerun the same stage otherwise.
        """
        out = out or self.stage_dir(stage)
        cfg = dataclasses.replace(train_config(stage.kind, self.scale), seed=seed)
        if finished(out, cfg.steps):
            return out / CHECKPOINT
        self.write_plan()
        short = stage.kind == "short"
        if teacher is None and not (cfg.fsdp and rank_world()[1] > 1):
            teacher = self.parent
        else:  # another teacher, or FSDP2, which shards a teacher in place: each stage reads its own copy
            teacher = from_pretrained(teacher or self.parent_checkpoint, device=self.device).eval()
        teacher = teacher if short else long_context_teacher(teacher)
        return distill(
            student() if callable(student) else student,
            teacher,
            Windows(child_slice(stage.child, stage.kind, self.scale, self.data)),
            out,
            cfg,
            val_data=Windows(self.data.val if short else self.data.val_long[: self.scale.eval_batches]),
            loss=DistillLoss(teacher, temperature=self.scale.kd_temperature),
            val_loss_fn=lm_loss,
            extra_files={"tokenizer.json": self.corpus.tokenizer_path},
            desc=desc or f"{stage.paper_name} ({self.scale_name})",
            device=self.device,
        )

    def write_plan(self) -> None:
        """``plan.json``: the scale and the stages in the order they run (written by rank 0 alone)."""
        if rank_world()[0] != 0:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        plan = {"scale": self.scale_name, "settings": asdict(self.scale), "parent": str(self.parent_checkpoint)}
        plan["stages"] = [{"stage": s.name, "paper": s.paper_name} for s in STAGES]
        (self.root / "plan.json").write_text(json.dumps(plan, indent=2))


# ----------------------------------------------------------------------------- Figure 2
def training_curve(root: str | Path) -> Iterator[dict]:
    """Every logged training step of the cascade in order, with the stage and the cumulative tokens.

    Keys: stage, paper, kind, step, tokens (cumulative over the cascade), loss (the KD loss),
    ntp (the student's next-token cross-entropy on the training batch), teacher_ce.
    """
    offset = 0
    for stage in STAGES:
        if stage.kind == "init":
            continue
        records = read_metrics(Path(root) / stage.name)
        if not records:
            return
        last = 0
        for record in records:
            if "loss" in record:
                last = record["tokens"]
                yield {
                    "stage": stage.name,
                    "paper": stage.paper_name,
                    "kind": stage.kind,
                    **record,
                    "tokens": offset + record["tokens"],
                }
        offset += last
