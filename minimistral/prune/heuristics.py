"""The three pruning heuristics of Ministral 3 (paper section 3.1, Algorithm 2) and their baselines.

Order, as in Algorithm 2: layers, then hidden size, then FFN width. Each step reads
calibration activations captured with forward hooks (the model is never edited to
collect them), accumulated in streaming form so memory does not grow with the number
of calibration batches, and returns an ordinary, smaller :class:`Ministral3`.

1. Layers: score each block by the norm ratio of its output to its input per token,
   averaged; keep the top-k. The paper's pseudo-code keeps the highest
   ``mean(||out|| / ||in||)``, its prose says "input to output": both are here
   (``"out/in"``, ``"in/out"``), with ShortGPT's Block Influence
   ``1 - cos(in, out)``, the counterfactual score (loss with that one layer removed,
   Minitron-style) and its iterative variant (remove the least harmful layer, rescore
   the rest, repeat), weight magnitude and random choice as baselines.
2. Hidden size: one PCA over the residual-stream inputs of every attention norm and
   FFN norm gives ONE rotation for the whole network. RMSNorm gains are folded into
   the linears that read them, then embeddings, every reader and writer of the residual
   stream, and the head are rotated by the same orthogonal matrix (RMSNorm commutes
   with it: it keeps the norm), and the top components are kept.
3. FFN: unit importance ``mean |SiLU(W1 x) * W3 x|`` over calibration tokens; keep the
   top-k units in W1, W3 (rows) and W2 (columns).

Every statistic is a :class:`Probe` (hooks on one block at a time) and every weight
change a per-block or per-tensor function, so ``prune.streaming`` runs the
same math on a checkpoint read one block at a time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from minimistral.arch.model import Block, Ministral3, RMSNorm, assemble
from minimistral.prune.baselines import (
    channel_magnitude,
    counterfactual_iterative_scores,
    counterfactual_scores,
    magnitude,
    random_layer_scores,
)
from minimistral.prune.calibrate import Probe, calibrate

IO_SCORES = ("out/in", "in/out", "block_influence")
LAYER_SCORES = (*IO_SCORES, "counterfactual", "counterfactual_iterative", "magnitude", "random")
LOSS_SCORES = ("counterfactual", "counterfactual_iterative")  # need whole windows [b, T+1]: they measure a loss
HIDDEN_METHODS = ("pca", "first", "magnitude")
FFN_SCORES = ("activation", "magnitude", "random")
READERS = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")  # read the residual stream (after a norm)
WRITERS = ("o_proj", "down_proj")  # add to the residual stream
PER_SITE_GAIN = False  # prune_hidden's default norm-gain correction (see norm_gains)


def fp64(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float64, for exact sums over many tokens (MPS has no float64: its activations go to the CPU)."""
    return x.cpu().double() if x.device.type == "mps" else x.double()


# ----------------------------------------------------------------------------- 1. layers
class BlockIO(Probe):
    r"""Per layer, sums over tokens of $\|y\|/\|x\|$, $\|x\|/\|y\|$ and $1-\cos(x, y)$.

    $x$ is a block's input and $y$ its output on the residual stream.
    """

    def __init__(self, num_layers: int):
        self.sums = {k: torch.zeros(num_layers, dtype=torch.float64) for k in IO_SCORES}

    def attach(self, block: Block, i: int) -> list[RemovableHandle]:
        def fn(module, args, output):
            x, y = fp64(args[0]), fp64(output)  # [b, t, D]
            nx, ny = x.norm(dim=-1), y.norm(dim=-1)  # [b, t]
            self.sums["out/in"][i] += (ny / nx).sum().cpu()
            self.sums["in/out"][i] += (nx / ny).sum().cpu()
            self.sums["block_influence"][i] += (1 - F.cosine_similarity(x, y, dim=-1)).sum().cpu()

        return [block.register_forward_hook(fn)]

    def scores(self, tokens: int) -> dict[str, torch.Tensor]:
        """Means over ``tokens`` calibration tokens, each ``[num_layers]``."""
        return {k: (v / tokens).float() for k, v in self.sums.items()}


def block_io_scores(model: Ministral3, batches: Iterable[torch.Tensor]) -> dict[str, torch.Tensor]:
    r"""Per-layer means over calibration tokens of $\|y\|/\|x\|$, $\|x\|/\|y\|$ and $1-\cos(x, y)$.

    $x$ is a block's input and $y$ its output on the residual stream. Returns
    ``{"out/in", "in/out", "block_influence"}``, each ``[num_layers]``.
    """
    probe = BlockIO(len(model.model.layers))
    return probe.scores(calibrate(model, batches, probe.register(model)))


def check_layer_score(score: str) -> None:
    """Raise a ``ValueError`` naming the choices unless ``score`` is one of ``LAYER_SCORES``."""
    if score not in LAYER_SCORES:
        raise ValueError(f"unknown layer score {score!r}; choose from {', '.join(LAYER_SCORES)}")


def layer_scores(
    model: Ministral3,
    batches: Iterable[torch.Tensor],
    score: str = "out/in",
    seed: int = 0,
    num_layers: int | None = None,
) -> torch.Tensor:
    """Importance of every layer, ``[num_layers]``; the layers with the highest scores are kept.

    ``num_layers`` (how many will be kept) only lets ``counterfactual_iterative`` stop early;
    the layers it keeps are the same either way. The loss scores read whole windows ``[b, T+1]``.
    """
    check_layer_score(score)
    if score in IO_SCORES:
        return block_io_scores(model, batches)[score]
    if score == "counterfactual":
        return counterfactual_scores(model, batches)
    if score == "counterfactual_iterative":
        return counterfactual_iterative_scores(model, batches, num_layers)
    if score == "magnitude":
        return torch.tensor([magnitude(b) for b in model.model.layers])
    return random_layer_scores(len(model.model.layers), seed)


def keep_top(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the ``k`` highest scores, in their original order."""
    if not 0 < k <= len(scores):
        raise ValueError(f"cannot keep {k} of {len(scores)}")
    return sorted(scores.topk(k).indices.tolist())


def prune_layers(
    model: Ministral3, batches: Iterable[torch.Tensor], num_layers: int, score: str = "out/in", seed: int = 0
) -> Ministral3:
    """Keep the ``num_layers`` blocks with the highest ``score`` (paper Algorithm 2, step 1)."""
    keep = keep_top(layer_scores(model, batches, score, seed, num_layers), num_layers)
    return select_layers(model, keep)


def select_layers(model: Ministral3, keep: list[int]) -> Ministral3:
    """A new model made of the blocks ``keep`` (weights copied)."""
    cfg = model.config.replace(num_hidden_layers=len(keep))
    state = {}
    for k, v in model.state_dict().items():
        if k.startswith("model.layers."):
            i, rest = k[len("model.layers.") :].split(".", 1)
            if int(i) in keep:
                state[f"model.layers.{keep.index(int(i))}.{rest}"] = v
        else:
            state[k] = v
    return _build(cfg, state, model)


def _build(cfg, state: dict[str, torch.Tensor], like: Ministral3) -> Ministral3:
    """The pruned model: ``state``'s tensors (copied) in a model of ``cfg``, on ``like``'s device and dtype."""
    w = like.lm_head.weight
    return assemble(cfg, state).to(device=w.device, dtype=w.dtype).eval()


# ----------------------------------------------------------------------------- 2. hidden size
class SecondMoment(Probe):
    r"""$C = \sum_t x_t x_t^\top$ over the inputs of every attention norm and FFN norm, in fp64: ``[D, D]``."""

    def __init__(self, hidden_size: int):
        self.C = torch.zeros(hidden_size, hidden_size, dtype=torch.float64)
        self.rows = 0

    def attach(self, block: Block, i: int) -> list[RemovableHandle]:
        return [m.register_forward_pre_hook(self._add) for m in (block.input_layernorm, block.post_attention_layernorm)]

    def _add(self, module, args) -> None:
        x = fp64(args[0].reshape(-1, self.C.shape[0]))  # [tokens, D]
        self.C.add_((x.T @ x).cpu())
        self.rows += x.shape[0]


def residual_second_moment(model: Ministral3, batches: Iterable[torch.Tensor]) -> tuple[torch.Tensor, int]:
    r"""$C = \sum_t x_t x_t^\top$ over the inputs of every attention norm and FFN norm, in fp64: ``[D, D]``."""
    probe = SecondMoment(model.config.hidden_size)
    calibrate(model, batches, probe.register(model))
    return probe.C, probe.rows


def pca_rotation(C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvectors of the (uncentred) second moment, by decreasing eigenvalue: ``Q [D, D]``, ``eigenvalues [D]``.

    Uncentred, because RMSNorm subtracts no mean: the rotation that keeps the most of
    ``||x||^2`` in its first d coordinates is the top-d eigenvectors of ``E[x x^T]``.
    Each column's sign is fixed (its largest entry positive), so two second moments that
    differ by rounding give the same basis, not one with some axes flipped.
    """
    eigenvalues, Q = torch.linalg.eigh(C)  # ascending
    order = eigenvalues.argsort(descending=True)
    Q = Q[:, order]
    sign = Q.gather(0, Q.abs().argmax(0, keepdim=True)).sign()  # [1, D]
    return Q * sign, eigenvalues[order]


class SiteEnergy(Probe):
    r"""Per norm site $s$, the energy along each principal component, $e_{s,k} = \sum_t (x_t Q)_k^2$.

    Sites in :func:`norm_sites` order: the attention and FFN norm of every block, then
    the final norm. ``energy`` is ``[2L + 1, D]``; its first $2L$ rows add up to the
    eigenvalues of $C$.
    """

    def __init__(self, num_layers: int, Q: torch.Tensor):
        self.Q = Q  # [D, D] fp64
        self.energy = torch.zeros(2 * num_layers + 1, Q.shape[0], dtype=torch.float64)

    def _hook(self, site: int):
        def fn(module, args):
            x = fp64(args[0].reshape(-1, self.Q.shape[0]))  # [tokens, D]
            self.energy[site] += ((x @ self.Q.to(x.device)) ** 2).sum(0).cpu()

        return fn

    def attach(self, block: Block, i: int) -> list[RemovableHandle]:
        norms = (block.input_layernorm, block.post_attention_layernorm)
        return [m.register_forward_pre_hook(self._hook(2 * i + k)) for k, m in enumerate(norms)]

    def attach_final(self, norm: RMSNorm) -> list[RemovableHandle]:
        return [norm.register_forward_pre_hook(self._hook(self.energy.shape[0] - 1))]


def site_energy(model: Ministral3, batches: Iterable[torch.Tensor], Q: torch.Tensor) -> torch.Tensor:
    r"""$e_{s,k} = \sum_t (x_t Q)_k^2$ for every norm site $s$ and component $k$: ``[2L + 1, D]`` (a second pass)."""
    probe = SiteEnergy(len(model.model.layers), Q)
    calibrate(model, batches, probe.register(model))
    return probe.energy


def norm_sites(num_layers: int) -> list[str]:
    """Names of every RMSNorm gain: attention and FFN norm of each block, then the final norm."""
    kinds = ("input_layernorm", "post_attention_layernorm")
    return [f"model.layers.{i}.{k}.weight" for i in range(num_layers) for k in kinds] + ["model.norm.weight"]


def norm_gains(
    num_layers: int, hidden_size: int, eigenvalues: torch.Tensor, energy: torch.Tensor | None = None
) -> dict[str, float]:
    r"""The factor each norm gain is multiplied by when the stream keeps ``hidden_size`` = $d$ of $D$ components.

    RMSNorm divides by $\|x_d\|/\sqrt{d}$ instead of $\|x\|/\sqrt{D}$; with $f$ the share
    of the input's energy the kept components hold, $\|x_d\| \approx \sqrt{f}\,\|x\|$, so
    the gain that restores the output's scale is $\sqrt{f D / d}$ (exactly 1 at full rank).
    Pooled (``energy=None``): one $f = \sum_{k \le d} \lambda_k / \sum_k \lambda_k$ for every
    site. Per site (``energy`` from :func:`site_energy`): $f_s = \sum_{k \le d} e_{s,k} / \sum_k e_{s,k}$.
    """
    D, d = eigenvalues.numel(), hidden_size
    sites = norm_sites(num_layers)
    if energy is None:
        kept = (eigenvalues[:d].sum() / eigenvalues.sum()).item()
        return dict.fromkeys(sites, math.sqrt(kept * D / d))
    kept_per_site = (energy[:, :d].sum(1) / energy.sum(1)).tolist()  # [2L + 1]
    return {s: math.sqrt(f * D / d) for s, f in zip(sites, kept_per_site, strict=True)}


def fold_block_gains(block: Block) -> None:
    r"""Move a block's two RMSNorm gains into the linears that read them: $W\,\mathrm{diag}(g)$, gain -> 1."""
    attn, mlp = block.self_attn, block.mlp
    with torch.no_grad():
        for norm, readers in (
            (block.input_layernorm, (attn.q_proj, attn.k_proj, attn.v_proj)),
            (block.post_attention_layernorm, (mlp.gate_proj, mlp.up_proj)),
        ):
            for lin in readers:
                lin.weight.mul_(norm.weight[None, :])
            norm.weight.fill_(1.0)


def fold_norm_gains(model: Ministral3) -> None:
    r"""Move every RMSNorm gain into the linears that read it: $W\,\mathrm{diag}(g)$, gain -> 1.

    Function-preserving for the block norms. The final norm's gain goes into the head
    when the model is rotated (``rotate_ends``), which unties a tied head (callers decide
    what to do about that, see ``prune_hidden``).
    """
    for block in model.model.layers:
        fold_block_gains(block)


def rotate_block(block: Block, Q: torch.Tensor) -> None:
    r"""A block in the basis ``Q`` (gains folded): readers $W \mapsto W Q$, writers $W \mapsto Q^\top W$."""
    Q = Q.to(block.mlp.up_proj.weight)
    attn, mlp = block.self_attn, block.mlp
    with torch.no_grad():
        for lin in (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj):
            lin.weight.copy_(lin.weight @ Q)  # readers
        for lin in (attn.o_proj, mlp.down_proj):
            lin.weight.copy_(Q.T @ lin.weight)  # writers


@torch.no_grad()
def rotate_ends(
    embed: torch.Tensor,
    head: torch.Tensor,
    final_gain: torch.Tensor,
    Q: torch.Tensor,
    tie: bool,
    was_tied: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Embedding, head and final-norm gain in the basis ``Q``: returns $(E', H', g')$.

    Untied result: $E' = E Q$, $H' = H\,\mathrm{diag}(g_f)\,Q$, $g' = 1$ (exact). Tied result
    (one shared matrix), from a tied model (``was_tied``, $H = E$): $E' = H' = E Q$ and
    $g' = \mathrm{diag}(Q^\top \mathrm{diag}(g_f)\,Q)$, exact only for a uniform $g_f$. From an
    untied model one of its two matrices must go: the head is kept, $E' = H' = H\,\mathrm{diag}(g_f)\,Q$
    and $g' = 1$, so the logits stay exact and only the input embedding changes (the
    embedding is swamped by the first block's output; on the tiny parent at $d = 192$
    keeping the head lost 0.7 nats less than keeping the embedding).
    ``embed``, ``head`` ``[V, D]``, ``final_gain`` ``[D]``.
    """
    Qc = Q.to(embed)
    if tie and was_tied:
        E, Qd = embed @ Qc, Q.to(final_gain)
        return E, E, torch.einsum("ij,i,ij->j", Qd, final_gain, Qd)  # diag(Q^T diag(g) Q)
    H = (head * final_gain[None, :]) @ Qc  # [V, D]
    return (H if tie else embed @ Qc), H, torch.ones_like(final_gain)


def rotate(model: Ministral3, Q: torch.Tensor, tie: bool = False) -> None:
    r"""Express the residual stream in the basis ``Q`` (orthogonal ``[D, D]``): $x' = x Q$.

    Readers $W \mapsto W Q$ (after gains are folded), writers $W \mapsto Q^\top W$,
    embedding $E \mapsto E Q$, head $H \mapsto H\,\mathrm{diag}(g_f)\,Q$ (with ``tie``, one
    shared matrix: see :func:`rotate_ends`).
    """
    for block in model.model.layers:
        rotate_block(block, Q)
    E, H, g = rotate_ends(
        model.model.embed_tokens.weight,
        model.lm_head.weight,
        model.model.norm.weight,
        Q,
        tie,
        model.config.tie_word_embeddings,
    )
    model.model.embed_tokens.weight = nn.Parameter(E)
    model.lm_head.weight = model.model.embed_tokens.weight if tie else nn.Parameter(H)
    model.model.norm.weight = nn.Parameter(g)


def prune_hidden(
    model: Ministral3,
    batches: Iterable[torch.Tensor],
    hidden_size: int,
    method: str = "pca",
    tie_word_embeddings: bool | None = None,
    per_site_gain: bool = PER_SITE_GAIN,
) -> Ministral3:
    r"""Shrink the residual stream to ``hidden_size`` channels (paper Algorithm 2, step 2).

    ``pca``: fold gains, rotate by the PCA basis of the norm inputs, keep the top
    components, and multiply every norm gain by $\sqrt{f D / d}$ (:func:`norm_gains`):
    with one pooled $f$, or with each site's own $f_s$ (``per_site_gain``, which costs a
    second calibration pass). Baselines: ``first`` keeps channels $0..d-1$, ``magnitude``
    the channels with the largest total weight magnitude (no rotation, no rescaling).

    Tied embeddings: the final-norm gain folded into a tied head would untie it. With
    ``tie_word_embeddings=False`` (or ``None`` on an untied model) the head is folded and
    untied, which is exact. With ``True`` (``None`` on a tied model) on a tied model the
    head stays the rotated embedding and the final gain is replaced by the diagonal of its
    rotated form, $\mathrm{diag}(Q^\top \mathrm{diag}(g_f) Q)$: exact when $g_f$ is uniform, an
    approximation otherwise (``tests/test_prune.py`` measures the price). ``True`` on an
    untied model keeps the folded head as the shared matrix (the embedding is dropped):
    see :func:`rotate_ends`.
    """
    if method not in HIDDEN_METHODS:
        raise ValueError(f"unknown hidden method {method!r}; choose from {', '.join(HIDDEN_METHODS)}")
    D = model.config.hidden_size
    if not 0 < hidden_size <= D:
        raise ValueError(f"hidden_size must be in 1..{D}, got {hidden_size}")
    tie = model.config.tie_word_embeddings if tie_word_embeddings is None else tie_word_embeddings
    batches = list(batches)
    model = _copy(model)
    if method == "pca":
        C, _ = residual_second_moment(model, batches)
        Q, eigenvalues = pca_rotation(C)
        energy = site_energy(model, batches, Q) if per_site_gain else None
        gains = norm_gains(len(model.model.layers), hidden_size, eigenvalues, energy)
        fold_norm_gains(model)
        rotate(model, Q, tie)
        return slice_hidden(model, list(range(hidden_size)), tie, gains)
    if method == "first":
        keep = list(range(hidden_size))
    else:
        keep = sorted(channel_magnitude(model).topk(hidden_size).indices.tolist())
    return slice_hidden(model, keep, tie)


def slice_hidden_tensor(name: str, v: torch.Tensor, idx: torch.Tensor, gains: dict[str, float]) -> torch.Tensor:
    """One tensor of a model whose residual stream keeps only channels ``idx``; a norm gain times ``gains[name]``."""
    if name in ("model.embed_tokens.weight", "lm_head.weight") or name.endswith(tuple(f"{r}.weight" for r in READERS)):
        return v[:, idx]  # [out, D] -> [out, d]: reads the residual stream
    if name.endswith(tuple(f"{w}.weight" for w in WRITERS)):
        return v[idx, :]  # writes the residual stream
    if name.endswith("norm.weight"):
        return v[idx] * gains.get(name, 1.0)
    return v


def slice_hidden(model: Ministral3, keep: list[int], tie: bool, gains: dict[str, float] | None = None) -> Ministral3:
    """A model whose residual stream holds only channels ``keep`` of ``model``'s; norm gains times ``gains``."""
    idx = torch.tensor(keep, device=model.lm_head.weight.device)
    state = {k: slice_hidden_tensor(k, v, idx, gains or {}) for k, v in model.state_dict().items()}
    cfg = model.config.replace(hidden_size=len(keep), tie_word_embeddings=tie)
    return _build(cfg, state, model)


def _copy(model: Ministral3) -> Ministral3:
    """An independent copy (pruning never edits the caller's model)."""
    return _build(model.config, model.state_dict(), model)


# ----------------------------------------------------------------------------- 3. FFN
class FfnActivation(Probe):
    r"""Per layer, $\sum_t |\mathrm{SiLU}(W_1 x_t) \odot W_3 x_t|$ per unit: exactly the input of ``down_proj``."""

    def __init__(self, num_layers: int, intermediate_size: int):
        self.sums = [torch.zeros(intermediate_size, dtype=torch.float64) for _ in range(num_layers)]
        self.counts = [0] * num_layers

    def attach(self, block: Block, i: int) -> list[RemovableHandle]:
        def fn(module, args):
            h = args[0].reshape(-1, args[0].shape[-1])  # [tokens, F]
            self.sums[i] += h.abs().sum(0).cpu().double()
            self.counts[i] += h.shape[0]

        return [block.mlp.down_proj.register_forward_pre_hook(fn)]

    def importance(self) -> list[torch.Tensor]:
        """Means over calibration tokens, ``[num_layers][F]``."""
        return [(s / c).float() for s, c in zip(self.sums, self.counts, strict=True)]


def ffn_activation_importance(model: Ministral3, batches: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    r"""Per layer, $\mathbb{E}_{tokens} |\mathrm{SiLU}(W_1 x) \odot W_3 x|$ per unit: ``[num_layers][F]``.

    It is exactly the input of ``down_proj``, captured with a forward pre-hook.
    """
    probe = FfnActivation(len(model.model.layers), model.config.intermediate_size)
    calibrate(model, batches, probe.register(model))
    return probe.importance()


def ffn_scores(model: Ministral3, batches: Iterable[torch.Tensor], score: str = "activation", seed: int = 0):
    """Unit importance per layer (``[num_layers][F]``) for the chosen criterion."""
    if score not in FFN_SCORES:
        raise ValueError(f"unknown FFN score {score!r}; choose from {', '.join(FFN_SCORES)}")
    if score == "activation":
        return ffn_activation_importance(model, batches)
    if score == "magnitude":
        return [
            (
                b.mlp.gate_proj.weight.abs().sum(1)
                + b.mlp.up_proj.weight.abs().sum(1)
                + b.mlp.down_proj.weight.abs().sum(0)
            )
            .detach()
            .cpu()
            for b in model.model.layers
        ]
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(b.mlp.down_proj.in_features, generator=g) for b in model.model.layers]


def slice_ffn_tensor(name: str, v: torch.Tensor, keep: list[int]) -> torch.Tensor:
    """One tensor of a block whose FFN keeps only units ``keep``: rows of W1, W3, columns of W2."""
    if ".mlp." not in name:
        return v
    idx = torch.tensor(keep, device=v.device)
    return v[:, idx] if name.endswith("down_proj.weight") else v[idx, :]


def prune_ffn(
    model: Ministral3, batches: Iterable[torch.Tensor], intermediate_size: int, score: str = "activation", seed: int = 0
) -> Ministral3:
    """Keep the ``intermediate_size`` most important units of every FFN (paper Algorithm 2, step 3)."""
    scores = ffn_scores(model, batches, score, seed)
    keeps = [keep_top(s, intermediate_size) for s in scores]
    state = {}
    for k, v in model.state_dict().items():
        state[k] = slice_ffn_tensor(k, v, keeps[int(k.split(".")[2])]) if k.startswith("model.layers.") else v
    return _build(model.config.replace(intermediate_size=intermediate_size), state, model)


# ----------------------------------------------------------------------------- all three
def prune(
    model: Ministral3,
    batches: Iterable[torch.Tensor],
    num_layers: int | None = None,
    hidden_size: int | None = None,
    intermediate_size: int | None = None,
    layer_score: str = "out/in",
    tie_word_embeddings: bool | None = None,
    per_site_gain: bool = PER_SITE_GAIN,
) -> Ministral3:
    """Algorithm 2: layers, then hidden size, then FFN; each step recalibrates on the model it prunes.

    ``batches``: input windows ``[b, T]`` (the loss layer scores read them as ``[b, T+1]``).
    ``prune.streaming.prune_checkpoint`` does the same on a checkpoint on disk.
    """
    batches = list(batches)
    if num_layers is not None and num_layers != model.config.num_hidden_layers:
        model = prune_layers(model, batches, num_layers, layer_score)
    if hidden_size is not None and (hidden_size != model.config.hidden_size or tie_word_embeddings is not None):
        model = prune_hidden(
            model, batches, hidden_size, tie_word_embeddings=tie_word_embeddings, per_site_gain=per_site_gain
        )
    if intermediate_size is not None and intermediate_size != model.config.intermediate_size:
        model = prune_ffn(model, batches, intermediate_size)
    return model
