r"""Layer-at-a-time pruning of a checkpoint on disk: paper Algorithm 2 for a model larger than half the memory.

``prune_checkpoint`` runs the three steps of ``minimistral.prune.prune`` with the same
math (the same :class:`~minimistral.prune.Probe` statistics, the same per-block and
per-tensor weight changes) but never holds the whole model. The decisions taken so far
(which layers, which rotation and width, which FFN units) form a :class:`Cut` that is
applied to each tensor as it is read, and each calibration is a *pass over the blocks*:
embed the calibration windows, then for every kept block read its weights from the
safetensors files (one tensor at a time), apply the cut, push every calibration hidden
state through it with the step's probe attached, and free it. The pruned model is
written the same way, one shard per block.

Passes over the blocks, each reading every kept block once (the in-memory path also
recalibrates after each step; here each recalibration is one more pass):

* layers: 1 (norm ratios, Block Influence, magnitude), $L$ (counterfactual: one loss per
  removed layer), $\sum_k (L - k)$ (counterfactual_iterative), 0 (random);
* hidden size: 1 for the second moment, +1 for per-site norm gains;
* FFN: 1; writing: 1.

Peak memory: one block (read and pruned) + the embedding and head + the calibration
hidden states ``[tokens, D]``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open

from minimistral.arch.config import ModelConfig
from minimistral.arch.hub import INDEX, SINGLE, load_config, text_name, weight_files
from minimistral.arch.model import Block, RMSNorm, skeleton
from minimistral.arch.params import count_parameters
from minimistral.arch.rope import RotaryEmbedding
from minimistral.errors import CheckpointError
from minimistral.evaluate.loss import next_token_nll
from minimistral.files import atomic_write
from minimistral.prune.baselines import (
    greedy_removal_order,
    magnitude,
    random_layer_scores,
    removal_order_scores,
    single_removal_losses,
)
from minimistral.prune.calibrate import Probe, hooks
from minimistral.prune.heuristics import (
    IO_SCORES,
    PER_SITE_GAIN,
    BlockIO,
    FfnActivation,
    SecondMoment,
    SiteEnergy,
    check_layer_score,
    fold_block_gains,
    keep_top,
    norm_gains,
    pca_rotation,
    rotate_block,
    rotate_ends,
    slice_ffn_tensor,
    slice_hidden_tensor,
)

STORED_DTYPES = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
IN_MEMORY_PEAK = 5  # the in-memory path's peak, in model sizes, with headroom (measured: up to 3.9; see should_stream)


# ----------------------------------------------------------------------------- reading
class CheckpointReader:
    """The text model's tensors of a Hugging Face-format checkpoint, read by name on demand.

    Names, shapes and the dtype rule are those of ``hub.from_pretrained`` (``dtype`` defaults
    to that of the first stored tensor); every name and shape is checked against
    ``config.json`` up front, from the safetensors headers alone.
    """

    def __init__(self, path: str | os.PathLike, dtype: torch.dtype | None = None, device=None):
        self.path = Path(path)
        self.config = load_config(path)
        self.device = torch.device(device or "cpu")
        self.where: dict[str, tuple[str, Path]] = {}  # our name -> (stored name, file)
        for stored, file in weight_files(path).items():
            ours = text_name(stored)
            if ours is not None and not (ours == "lm_head.weight" and self.config.tie_word_embeddings):
                self.where[ours] = (stored, file)
        shapes = self._check_shapes()
        self.dtype = dtype or STORED_DTYPES.get(next(iter(shapes.values()))[1], torch.float32)

    def _check_shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        expected = {name: tuple(p.shape) for name, p in skeleton(self.config).named_parameters()}
        found = {}
        for name, (stored, file) in self.where.items():
            if name not in expected:
                raise CheckpointError(f"{file}: unexpected tensor {stored!r} for this config.json")
            with safe_open(str(file), framework="pt", device="cpu") as f:
                s = f.get_slice(stored)
                found[name] = (tuple(s.get_shape()), s.get_dtype())
            if found[name][0] != expected[name]:
                raise CheckpointError(
                    f"{file}: tensor {stored!r} has shape {found[name][0]}, config.json implies {expected[name]}"
                )
        missing = sorted(set(expected) - set(found))
        if missing:
            raise CheckpointError(f"{self.path}: missing tensor {missing[0]!r}")
        return found

    def tensors(self, names: Iterable[str]) -> dict[str, torch.Tensor]:
        """The tensors ``names`` (our names), each file opened once, cast to the model's device and dtype."""
        by_file: dict[Path, list[str]] = {}
        for name in names:
            by_file.setdefault(self.where[name][1], []).append(name)
        out = {}
        for file, group in by_file.items():
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for name in group:
                    out[name] = f.get_tensor(self.where[name][0]).to(device=self.device, dtype=self.dtype)
        return out

    def block(self, i: int) -> dict[str, torch.Tensor]:
        """Block ``i``'s tensors, named inside the block (``self_attn.q_proj.weight`` ...)."""
        prefix = f"model.layers.{i}."
        names = [n for n in self.where if n.startswith(prefix)]
        return {n[len(prefix) :]: t for n, t in self.tensors(names).items()}

    def weight_bytes(self) -> int:
        """Bytes of the text model's weights once loaded in ``self.dtype``."""
        return count_parameters(self.config) * self.dtype.itemsize


# ----------------------------------------------------------------------------- the cut
@dataclass(frozen=True)
class HiddenCut:
    """Step 2's decision: the PCA basis, the width kept, tying, and each norm gain's factor."""

    Q: torch.Tensor  # [D, D] fp64, columns by decreasing eigenvalue
    size: int  # d
    tie: bool
    gains: dict[str, float]  # norm gain name (layer-pruned numbering) -> factor


@dataclass(frozen=True)
class Cut:
    """Every pruning decision taken so far, applied to each tensor as it is read."""

    layers: list[int]  # blocks of the checkpoint kept, in order
    hidden: HiddenCut | None = None
    ffn: list[list[int]] | None = None  # FFN units kept, per kept layer


def _module(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    module.load_state_dict(state, strict=True, assign=True)
    return module.eval()


class StreamedModel:
    """A checkpoint seen through a :class:`Cut`: embedding, head and one block at a time, pruned as read."""

    def __init__(self, reader: CheckpointReader, cut: Cut):
        self.reader, self.cut = reader, cut
        cfg = reader.config.replace(num_hidden_layers=len(cut.layers))
        if cut.hidden is not None:
            cfg = cfg.replace(hidden_size=cut.hidden.size, tie_word_embeddings=cut.hidden.tie)
        if cut.ffn is not None:
            cfg = cfg.replace(intermediate_size=len(cut.ffn[0]))
        self.config: ModelConfig = cfg
        self.rotary = RotaryEmbedding(cfg)

    def block_state(self, j: int) -> dict[str, torch.Tensor]:
        """Kept block ``j`` with the cut applied: ``{"model.layers.j.<name>": tensor}``."""
        state = self.reader.block(self.cut.layers[j])
        h = self.cut.hidden
        if h is not None:  # fold the gains and rotate, as prune_hidden does on the whole model
            with torch.device("meta"):
                block = Block(self.reader.config)
            block = _module(block, state)
            fold_block_gains(block)
            rotate_block(block, h.Q)
            state = block.state_dict()
        state = {f"model.layers.{j}.{k}": v for k, v in state.items()}
        if h is not None:
            idx = torch.arange(h.size, device=self.reader.device)
            state = {k: slice_hidden_tensor(k, v, idx, h.gains) for k, v in state.items()}
        if self.cut.ffn is not None:
            state = {k: slice_ffn_tensor(k, v, self.cut.ffn[j]) for k, v in state.items()}
        return state

    def block(self, j: int) -> Block:
        """Kept block ``j`` as a module of the pruned shape."""
        prefix = f"model.layers.{j}."
        with torch.device("meta"):
            block = Block(self.config)
        return _module(block, {k[len(prefix) :]: v for k, v in self.block_state(j).items()})

    @cached_property
    def ends(self) -> dict[str, torch.Tensor]:
        """Embedding ``[V, d]``, final-norm gain ``[d]`` and head ``[V, d]`` with the cut applied."""
        tied = self.reader.config.tie_word_embeddings
        names = ["model.embed_tokens.weight", "model.norm.weight"] + ([] if tied else ["lm_head.weight"])
        t = self.reader.tensors(names)
        E, g = t["model.embed_tokens.weight"], t["model.norm.weight"]
        H = E if tied else t["lm_head.weight"]
        h = self.cut.hidden
        if h is not None:
            E, H, g = rotate_ends(E, H, g, h.Q, h.tie, tied)
            idx = torch.arange(h.size, device=self.reader.device)
            E, g = (
                slice_hidden_tensor("model.embed_tokens.weight", E, idx, h.gains),
                slice_hidden_tensor("model.norm.weight", g, idx, h.gains),
            )
            H = E if h.tie else slice_hidden_tensor("lm_head.weight", H, idx, h.gains)
        return {"model.embed_tokens.weight": E, "model.norm.weight": g, "lm_head.weight": H}

    def final_norm(self) -> RMSNorm:
        """The final RMSNorm with the cut applied."""
        with torch.device("meta"):
            norm = RMSNorm(self.config.hidden_size, self.config.rms_norm_eps)
        return _module(norm, {"weight": self.ends["model.norm.weight"]})


# ----------------------------------------------------------------------------- passes over the blocks
@torch.no_grad()
def run_blocks(
    sm: StreamedModel, inputs: list[torch.Tensor], probe: Probe | None = None, skip: frozenset[int] = frozenset()
) -> list[torch.Tensor]:
    """One pass: embed ``inputs`` (``[b, t]`` each), then every kept block but ``skip``, one block in memory at a time.

    ``probe`` is attached to each block while it runs, and to the final norm. Returns the
    final hidden states before the final norm, ``[b, t, d]`` per batch.
    """
    if sum(ids.numel() for ids in inputs) == 0:
        raise ValueError("no calibration batches")
    device, E = sm.reader.device, sm.ends["model.embed_tokens.weight"]
    h = [F.embedding(ids.to(device), E) for ids in inputs]  # [b, t, d] each
    for j in range(len(sm.cut.layers)):
        if j in skip:
            continue
        block = sm.block(j)
        with hooks(probe.attach(block, j) if probe else []):
            for b, x in enumerate(h):
                h[b] = block(x, sm.rotary(0, x.shape[1], x.device, x.dtype), j)
        del block
    if probe is not None:  # the final norm's input, for probes that read it
        norm = sm.final_norm()
        handles = probe.attach_final(norm)
        with hooks(handles):
            for x in h if handles else ():
                norm(x)
    return h


@torch.no_grad()
def streamed_loss(sm: StreamedModel, windows: list[torch.Tensor], skip: frozenset[int] = frozenset()) -> float:
    """``evaluate.loss.mean_loss`` on the streamed model with the blocks ``skip`` removed; windows ``[b, T+1]``."""
    h = run_blocks(sm, [w[:, :-1] for w in windows], skip=skip)
    norm, head = sm.final_norm(), sm.ends["lm_head.weight"]
    losses = [
        next_token_nll(F.linear(norm(x), head), w[:, 1:].to(sm.reader.device)) for x, w in zip(h, windows, strict=True)
    ]
    return torch.cat([x.flatten() for x in losses]).mean().item()  # the same mean as evaluate.mean_loss


def streamed_layer_scores(
    sm: StreamedModel, batches: list[torch.Tensor], score: str, num_layers: int | None = None, seed: int = 0
) -> torch.Tensor:
    """``prune.layer_scores`` of the streamed model, ``[num_layers]``, from passes over the blocks."""
    check_layer_score(score)
    n = len(sm.cut.layers)
    if score in IO_SCORES:
        probe = BlockIO(n)
        run_blocks(sm, batches, probe)
        return probe.scores(sum(ids.numel() for ids in batches))[score]
    loss_without = lambda removed: streamed_loss(sm, batches, frozenset(removed))
    if score == "counterfactual":
        return single_removal_losses(loss_without, n)
    if score == "counterfactual_iterative":
        return removal_order_scores(greedy_removal_order(loss_without, n, num_layers or 1), n)
    if score == "magnitude":
        return torch.tensor([magnitude(sm.block(j)) for j in range(n)])
    return random_layer_scores(n, seed)


def streamed_hidden_cut(
    sm: StreamedModel, batches: list[torch.Tensor], hidden_size: int, tie: bool, per_site_gain: bool
) -> HiddenCut:
    """``prune_hidden``'s PCA decision from one pass (two with ``per_site_gain``) over the blocks."""
    D, n = sm.config.hidden_size, sm.config.num_hidden_layers
    if not 0 < hidden_size <= D:
        raise ValueError(f"hidden_size must be in 1..{D}, got {hidden_size}")
    moment = SecondMoment(D)
    run_blocks(sm, batches, moment)
    Q, eigenvalues = pca_rotation(moment.C)
    energy = None
    if per_site_gain:
        sites = SiteEnergy(n, Q)
        run_blocks(sm, batches, sites)
        energy = sites.energy
    return HiddenCut(Q, hidden_size, tie, norm_gains(n, hidden_size, eigenvalues, energy))


def streamed_ffn_keep(sm: StreamedModel, batches: list[torch.Tensor], intermediate_size: int) -> list[list[int]]:
    """``prune_ffn``'s units kept per layer (activation importance), from one pass over the blocks."""
    probe = FfnActivation(sm.config.num_hidden_layers, sm.config.intermediate_size)
    run_blocks(sm, batches, probe)
    return [keep_top(s, intermediate_size) for s in probe.importance()]


# ----------------------------------------------------------------------------- writing
def write_streamed(sm: StreamedModel, out: str | os.PathLike) -> Path:
    """Write ``sm`` as a sharded HF directory, one block per shard, that ``from_pretrained`` and transformers load.

    Shards: the embedding, then each block, then the final norm (and the head when untied);
    each is written atomically as soon as it is computed, the index and ``config.json`` last.
    """
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    n = sm.config.num_hidden_layers
    names = [f"model-{k + 1:05d}-of-{n + 2:05d}.safetensors" for k in range(n + 2)]
    weight_map: dict[str, str] = {}
    total = 0

    def write(name: str, state: dict[str, torch.Tensor]) -> None:
        nonlocal total
        state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
        atomic_write(d / name, state)
        weight_map.update(dict.fromkeys(state, name))
        total += sum(t.numel() * t.element_size() for t in state.values())

    ends = sm.ends
    write(names[0], {"model.embed_tokens.weight": ends["model.embed_tokens.weight"]})
    for j in range(n):
        write(names[j + 1], sm.block_state(j))
    last = {"model.norm.weight": ends["model.norm.weight"]}
    if not sm.config.tie_word_embeddings:
        last["lm_head.weight"] = ends["lm_head.weight"]
    write(names[-1], last)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    atomic_write(d / INDEX, json.dumps(index, indent=2).encode())
    config = sm.config.to_hf_dict() | {"dtype": str(sm.reader.dtype).removeprefix("torch.")}
    atomic_write(d / "config.json", json.dumps(config, indent=2).encode())
    for stale in [*d.glob("model*.safetensors"), d / SINGLE]:
        if stale.exists() and stale.name not in names:
            stale.unlink()
    return d


# ----------------------------------------------------------------------------- all three
def prune_checkpoint(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    batches: Iterable[torch.Tensor],
    num_layers: int | None = None,
    hidden_size: int | None = None,
    intermediate_size: int | None = None,
    layer_score: str = "out/in",
    tie_word_embeddings: bool | None = None,
    per_site_gain: bool = PER_SITE_GAIN,
    dtype: torch.dtype | None = None,
    device=None,
) -> ModelConfig:
    """``prune.prune`` (Algorithm 2: layers, hidden size, FFN) on a checkpoint read one block at a time.

    Writes the pruned model to ``out`` (not ``checkpoint`` itself, which is still being
    read) and returns its config. Same arguments and same weights as ``prune.prune`` on
    ``from_pretrained(checkpoint, dtype, device)`` (``tests/test_prune_streaming.py``).
    """
    if Path(out).resolve() == Path(checkpoint).resolve():
        raise ValueError("out: the streaming path reads the checkpoint while writing; choose another directory")
    check_layer_score(layer_score)
    reader = CheckpointReader(checkpoint, dtype, device)
    cfg, batches = reader.config, list(batches)
    cut = Cut(layers=list(range(cfg.num_hidden_layers)))
    if num_layers is not None and num_layers != cfg.num_hidden_layers:
        scores = streamed_layer_scores(StreamedModel(reader, cut), batches, layer_score, num_layers)
        cut = Cut(layers=[cut.layers[k] for k in keep_top(scores, num_layers)])
    if hidden_size is not None and (hidden_size != cfg.hidden_size or tie_word_embeddings is not None):
        tie = cfg.tie_word_embeddings if tie_word_embeddings is None else tie_word_embeddings
        hidden = streamed_hidden_cut(StreamedModel(reader, cut), batches, hidden_size, tie, per_site_gain)
        cut = replace(cut, hidden=hidden)
    if intermediate_size is not None and intermediate_size != cfg.intermediate_size:
        cut = replace(cut, ffn=streamed_ffn_keep(StreamedModel(reader, cut), batches, intermediate_size))
    sm = StreamedModel(reader, cut)
    write_streamed(sm, out)
    return sm.config


# ----------------------------------------------------------------------------- when to stream
def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable`` of /proc/meminfo), None where unknown."""
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    m = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else None


def should_stream(weight_bytes: int, available: int | None) -> bool:
    """Stream when the model's weights are more than a fifth of the available memory.

    The in-memory path holds the loaded model and up to three pruned copies in the making:
    its peak RSS grew by 3.9 times the weights for a 312 MiB model pruned 12 -> 10 layers,
    hidden 768 -> 512, FFN 2048 -> 1536 (2.5 times for 24 -> 10 layers), so
    ``IN_MEMORY_PEAK`` = 5 leaves some headroom. The streaming path's grew by about 0.1 GiB
    for either model: about two blocks, the embedding and head, and the calibration hidden
    states (``tests/test_prune_streaming.py`` measures it). Unknown available memory: do not stream.
    """
    return available is not None and IN_MEMORY_PEAK * weight_bytes > available
