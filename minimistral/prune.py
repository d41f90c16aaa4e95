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
   Minitron-style), weight magnitude and random choice as baselines.
2. Hidden size: one PCA over the residual-stream inputs of every attention norm and
   FFN norm gives ONE rotation for the whole network. RMSNorm gains are folded into
   the linears that read them, then embeddings, every reader and writer of the residual
   stream, and the head are rotated by the same orthogonal matrix (RMSNorm commutes
   with it: it keeps the norm), and the top components are kept.
3. FFN: unit importance ``mean |SiLU(W1 x) * W3 x|`` over calibration tokens; keep the
   top-k units in W1, W3 (rows) and W2 (columns).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from minimistral.model import Ministral3

LAYER_SCORES = ("out/in", "in/out", "block_influence", "counterfactual", "magnitude", "random")
HIDDEN_METHODS = ("pca", "first", "magnitude")
FFN_SCORES = ("activation", "magnitude", "random")


# ----------------------------------------------------------------------------- calibration
@contextmanager
def hooks(handles: list):
    """Remove every hook on exit, even after an error."""
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def calibrate(model: Ministral3, batches: Iterable[torch.Tensor], register: Callable[[], list]) -> int:
    """Run ``model`` over ``batches`` with the hooks ``register()`` installs; returns the token count."""
    model.eval()
    device = model.lm_head.weight.device
    tokens = 0
    with hooks(register()):
        for ids in batches:
            model(ids.to(device))
            tokens += ids.numel()
    if tokens == 0:
        raise ValueError("no calibration batches")
    return tokens


# ----------------------------------------------------------------------------- 1. layers
def block_io_scores(model: Ministral3, batches: Iterable[torch.Tensor]) -> dict[str, torch.Tensor]:
    r"""Per-layer means over calibration tokens of $\|y\|/\|x\|$, $\|x\|/\|y\|$ and $1-\cos(x, y)$.

    $x$ is a block's input and $y$ its output on the residual stream. Returns
    ``{"out/in", "in/out", "block_influence"}``, each ``[num_layers]``.
    """
    n = len(model.model.layers)
    sums = {k: torch.zeros(n, dtype=torch.float64) for k in ("out/in", "in/out", "block_influence")}

    def register():
        def hook(i):
            def fn(module, args, output):
                x, y = args[0].double(), output.double()  # [b, t, D]
                nx, ny = x.norm(dim=-1), y.norm(dim=-1)  # [b, t]
                sums["out/in"][i] += (ny / nx).sum().cpu()
                sums["in/out"][i] += (nx / ny).sum().cpu()
                sums["block_influence"][i] += (1 - F.cosine_similarity(x, y, dim=-1)).sum().cpu()

            return fn

        return [block.register_forward_hook(hook(i)) for i, block in enumerate(model.model.layers)]

    tokens = calibrate(model, batches, register)
    return {k: (v / tokens).float() for k, v in sums.items()}


@torch.no_grad()
def counterfactual_scores(model: Ministral3, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """Mean next-token loss on ``batches`` with each single layer removed, ``[num_layers]`` (higher = more needed)."""
    batches = list(batches)
    layers = model.model.layers
    scores = torch.zeros(len(layers))
    for i in range(len(layers)):
        model.model.layers = nn.ModuleList(b for j, b in enumerate(layers) if j != i)
        try:
            scores[i] = mean_loss(model, batches)
        finally:
            model.model.layers = layers
    return scores


@torch.no_grad()
def mean_loss(model: Ministral3, batches: Iterable[torch.Tensor]) -> float:
    """Token-averaged next-token cross-entropy over windows ``[b, T+1]``."""
    model.eval()
    device = model.lm_head.weight.device
    total, count = 0.0, 0
    for w in batches:
        w = w.to(device)
        logits = model(w[:, :-1]).float()
        total += F.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten(), reduction="sum").item()
        count += w[:, 1:].numel()
    return total / count


@torch.no_grad()
def magnitude(module: nn.Module) -> float:
    """Mean absolute weight over a module's matrices (the weight-magnitude baseline)."""
    mats = [p for p in module.parameters() if p.ndim == 2]
    return float(sum(p.abs().sum() for p in mats) / sum(p.numel() for p in mats))


def layer_scores(
    model: Ministral3, batches: Iterable[torch.Tensor], score: str = "out/in", seed: int = 0
) -> torch.Tensor:
    """Importance of every layer, ``[num_layers]``; the layers with the highest scores are kept."""
    if score not in LAYER_SCORES:
        raise ValueError(f"unknown layer score {score!r}; choose from {', '.join(LAYER_SCORES)}")
    if score in ("out/in", "in/out", "block_influence"):
        return block_io_scores(model, batches)[score]
    if score == "counterfactual":
        return counterfactual_scores(model, batches)
    if score == "magnitude":
        return torch.tensor([magnitude(b) for b in model.model.layers])
    return torch.rand(len(model.model.layers), generator=torch.Generator().manual_seed(seed))


def keep_top(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the ``k`` highest scores, in their original order."""
    if not 0 < k <= len(scores):
        raise ValueError(f"cannot keep {k} of {len(scores)}")
    return sorted(scores.topk(k).indices.tolist())


def prune_layers(
    model: Ministral3, batches: Iterable[torch.Tensor], num_layers: int, score: str = "out/in", seed: int = 0
) -> Ministral3:
    """Keep the ``num_layers`` blocks with the highest ``score`` (paper Algorithm 2, step 1)."""
    keep = keep_top(layer_scores(model, batches, score, seed), num_layers)
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
    w = like.lm_head.weight
    with torch.device("meta"):
        new = Ministral3(cfg)
    if cfg.tie_word_embeddings:
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}
    new.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=False, assign=True)
    if cfg.tie_word_embeddings:
        new.lm_head.weight = new.model.embed_tokens.weight
    missing = [k for k, p in new.named_parameters() if p.device.type == "meta"]
    if missing:
        raise RuntimeError(f"pruning left tensors unset: {missing[:3]}")
    return new.to(device=w.device, dtype=w.dtype).eval()


# ----------------------------------------------------------------------------- 2. hidden size
def residual_second_moment(model: Ministral3, batches: Iterable[torch.Tensor]) -> tuple[torch.Tensor, int]:
    r"""$C = \sum_t x_t x_t^\top$ over the inputs of every attention norm and FFN norm, in fp64: ``[D, D]``."""
    D = model.config.hidden_size
    C = torch.zeros(D, D, dtype=torch.float64)
    count = [0]

    def register():
        def fn(module, args):
            x = args[0].reshape(-1, D).double()  # [tokens, D]
            C.add_((x.T @ x).cpu())
            count[0] += x.shape[0]

        norms = [m for b in model.model.layers for m in (b.input_layernorm, b.post_attention_layernorm)]
        return [m.register_forward_pre_hook(fn) for m in norms]

    calibrate(model, batches, register)
    return C, count[0]


def pca_rotation(C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvectors of the (uncentred) second moment, by decreasing eigenvalue: ``Q [D, D]``, ``eigenvalues [D]``.

    Uncentred, because RMSNorm subtracts no mean: the rotation that keeps the most of
    ``||x||^2`` in its first d coordinates is the top-d eigenvectors of ``E[x x^T]``.
    """
    eigenvalues, Q = torch.linalg.eigh(C)  # ascending
    order = eigenvalues.argsort(descending=True)
    return Q[:, order], eigenvalues[order]


def fold_norm_gains(model: Ministral3) -> None:
    r"""Move every RMSNorm gain into the linears that read it: $W\,\mathrm{diag}(g)$, gain -> 1.

    Function-preserving for the block norms. The final norm's gain goes into the head,
    which unties a tied head (callers decide what to do about that, see ``prune_hidden``).
    """
    with torch.no_grad():
        for block in model.model.layers:
            attn, mlp = block.self_attn, block.mlp
            for norm, readers in (
                (block.input_layernorm, (attn.q_proj, attn.k_proj, attn.v_proj)),
                (block.post_attention_layernorm, (mlp.gate_proj, mlp.up_proj)),
            ):
                for lin in readers:
                    lin.weight.mul_(norm.weight[None, :])
                norm.weight.fill_(1.0)


def rotate(model: Ministral3, Q: torch.Tensor, fold_final: bool = True) -> None:
    r"""Express the residual stream in the basis ``Q`` (orthogonal ``[D, D]``): $x' = x Q$.

    Readers $W \mapsto W Q$ (after gains are folded), writers $W \mapsto Q^\top W$,
    embedding $E \mapsto E Q$, head $H \mapsto H\,\mathrm{diag}(g_f)\,Q$ (``fold_final``).
    """
    Q = Q.to(model.lm_head.weight)
    tied = model.config.tie_word_embeddings
    with torch.no_grad():
        head = model.lm_head.weight.detach().clone()
        E = model.model.embed_tokens.weight
        E.copy_(E @ Q)
        for block in model.model.layers:
            attn, mlp = block.self_attn, block.mlp
            for lin in (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj):
                lin.weight.copy_(lin.weight @ Q)  # readers
            for lin in (attn.o_proj, mlp.down_proj):
                lin.weight.copy_(Q.T @ lin.weight)  # writers
        g = model.model.norm.weight
        if fold_final:
            model.lm_head.weight = nn.Parameter((head * g[None, :]) @ Q)
            g.fill_(1.0)
        elif not tied:
            model.lm_head.weight.copy_(head @ Q)


def prune_hidden(
    model: Ministral3,
    batches: Iterable[torch.Tensor],
    hidden_size: int,
    method: str = "pca",
    tie_word_embeddings: bool | None = None,
) -> Ministral3:
    r"""Shrink the residual stream to ``hidden_size`` channels (paper Algorithm 2, step 2).

    ``pca``: fold gains, rotate by the PCA basis of the norm inputs, keep the top
    components. RMSNorm then divides by $\|x_d\|/\sqrt{d}$ instead of $\|x\|/\sqrt{D}$;
    with $f = \sum_{i \le d} \lambda_i / \sum_i \lambda_i$ the share of energy kept,
    $\|x_d\| \approx \sqrt{f}\,\|x\|$, so every norm gain becomes $\sqrt{f D / d}$ (exactly 1
    at full rank). Baselines: ``first`` keeps channels $0..d-1$, ``magnitude`` the
    channels with the largest total weight magnitude (no rotation, no rescaling).

    Tied embeddings: the final-norm gain folded into a tied head would untie it. With
    ``tie_word_embeddings=False`` (or ``None`` on an untied model) the head is folded and
    untied, which is exact. With ``True`` (``None`` on a tied model) the head stays the
    rotated embedding and the final gain is replaced by the diagonal of its rotated form,
    $\mathrm{diag}(Q^\top \mathrm{diag}(g_f) Q)$: exact when $g_f$ is uniform, an
    approximation otherwise (``tests/test_prune.py`` measures the price).
    """
    if method not in HIDDEN_METHODS:
        raise ValueError(f"unknown hidden method {method!r}; choose from {', '.join(HIDDEN_METHODS)}")
    D = model.config.hidden_size
    if not 0 < hidden_size <= D:
        raise ValueError(f"hidden_size must be in 1..{D}, got {hidden_size}")
    tie = model.config.tie_word_embeddings if tie_word_embeddings is None else tie_word_embeddings
    model = _copy(model)
    if method == "pca":
        C, _ = residual_second_moment(model, batches)
        Q, eigenvalues = pca_rotation(C)
        kept_energy = (eigenvalues[:hidden_size].sum() / eigenvalues.sum()).item()
        g_final = model.model.norm.weight.detach().clone()
        fold_norm_gains(model)
        rotate(model, Q, fold_final=not tie)
        if tie:
            Qd = Q.to(g_final)
            model.model.norm.weight.data = torch.einsum("ij,i,ij->j", Qd, g_final, Qd)  # diag(Q^T diag(g) Q)
            model.lm_head.weight = model.model.embed_tokens.weight
        return slice_hidden(model, list(range(hidden_size)), tie, gain=math.sqrt(kept_energy * D / hidden_size))
    if method == "first":
        keep = list(range(hidden_size))
    else:
        keep = sorted(channel_magnitude(model).topk(hidden_size).indices.tolist())
    return slice_hidden(model, keep, tie)


def channel_magnitude(model: Ministral3) -> torch.Tensor:
    """Per residual channel, the summed |weight| of every matrix that reads or writes it, ``[D]``."""
    total = model.model.embed_tokens.weight.abs().sum(0) + model.lm_head.weight.abs().sum(0)
    for block in model.model.layers:
        a, m = block.self_attn, block.mlp
        for lin in (a.q_proj, a.k_proj, a.v_proj, m.gate_proj, m.up_proj):
            total = total + lin.weight.abs().sum(0)
        for lin in (a.o_proj, m.down_proj):
            total = total + lin.weight.abs().sum(1)
    return total.detach()


def slice_hidden(model: Ministral3, keep: list[int], tie: bool, gain: float = 1.0) -> Ministral3:
    """A model whose residual stream holds only channels ``keep`` of ``model``'s; norm gains times ``gain``."""
    idx = torch.tensor(keep, device=model.lm_head.weight.device)
    state = {}
    for k, v in model.state_dict().items():
        if (
            k == "model.embed_tokens.weight"
            or k == "lm_head.weight"
            or k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "gate_proj.weight", "up_proj.weight"))
        ):
            v = v[:, idx]  # [out, D] -> [out, d]: reads the residual stream
        elif k.endswith(("o_proj.weight", "down_proj.weight")):
            v = v[idx, :]  # writes the residual stream
        elif k.endswith("norm.weight"):
            v = v[idx] * gain
        state[k] = v
    cfg = model.config.replace(hidden_size=len(keep), tie_word_embeddings=tie)
    return _build(cfg, state, model)


def _copy(model: Ministral3) -> Ministral3:
    """An independent copy (pruning never edits the caller's model)."""
    return _build(model.config, model.state_dict(), model)


# ----------------------------------------------------------------------------- 3. FFN
def ffn_activation_importance(model: Ministral3, batches: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    r"""Per layer, $\mathbb{E}_{tokens} |\mathrm{SiLU}(W_1 x) \odot W_3 x|$ per unit: ``[num_layers][F]``.

    It is exactly the input of ``down_proj``, captured with a forward pre-hook.
    """
    sums = [torch.zeros(b.mlp.down_proj.in_features, dtype=torch.float64) for b in model.model.layers]
    counts = [0] * len(sums)

    def register():
        def hook(i):
            def fn(module, args):
                h = args[0].reshape(-1, args[0].shape[-1])  # [tokens, F]
                sums[i] += h.abs().sum(0).double().cpu()
                counts[i] += h.shape[0]

            return fn

        return [b.mlp.down_proj.register_forward_pre_hook(hook(i)) for i, b in enumerate(model.model.layers)]

    calibrate(model, batches, register)
    return [(s / c).float() for s, c in zip(sums, counts, strict=True)]


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


def prune_ffn(
    model: Ministral3, batches: Iterable[torch.Tensor], intermediate_size: int, score: str = "activation", seed: int = 0
) -> Ministral3:
    """Keep the ``intermediate_size`` most important units of every FFN (paper Algorithm 2, step 3)."""
    scores = ffn_scores(model, batches, score, seed)
    keeps = [keep_top(s, intermediate_size) for s in scores]
    state = {}
    for k, v in model.state_dict().items():
        if k.startswith("model.layers.") and ".mlp." in k:
            keep = torch.tensor(keeps[int(k.split(".")[2])], device=v.device)
            v = v[:, keep] if k.endswith("down_proj.weight") else v[keep, :]
        state[k] = v
    return _build(model.config.replace(intermediate_size=intermediate_size), state, model)


# ----------------------------------------------------------------------------- calibration data
def calibration_batches(tokenizer, calib: str, n_tokens: int, seq_len: int, batch_size: int = 8) -> list[torch.Tensor]:
    """``n_tokens`` of calibration text as input batches ``[b, seq_len]``, encoded with the model's tokenizer.

    ``calib`` is a source of the project's *training* split (``shakespeare``, ``milton``,
    ``math``, or ``mixture`` for all three) or the path of a UTF-8 text file.
    """
    from pathlib import Path

    from minimistral.data import SOURCES, load_documents

    if Path(calib).is_file():
        texts = [Path(calib).read_text(encoding="utf-8")]
    elif calib in (*SOURCES, "mixture"):
        train = load_documents()["train"]
        texts = [t for t, s in zip(train["text"], train["source"], strict=True) if calib in (s, "mixture")]
        texts = texts[:: max(1, len(texts) // 64)]  # spread over documents
    else:
        raise ValueError(f"--calib {calib!r}: not a file, nor one of {', '.join((*SOURCES, 'mixture'))}")
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer.encode(text))
        if len(ids) >= n_tokens:
            break
    n = min(len(ids), n_tokens) // seq_len
    if n == 0:
        raise ValueError(f"--calib {calib!r}: fewer than {seq_len} tokens of text")
    windows = torch.tensor(ids[: n * seq_len]).view(n, seq_len)
    return [windows[i : i + batch_size] for i in range(0, n, batch_size)]


# ----------------------------------------------------------------------------- all three
def prune(
    model: Ministral3,
    batches: Iterable[torch.Tensor],
    num_layers: int | None = None,
    hidden_size: int | None = None,
    intermediate_size: int | None = None,
    layer_score: str = "out/in",
    tie_word_embeddings: bool | None = None,
) -> Ministral3:
    """Algorithm 2: layers, then hidden size, then FFN; each step recalibrates on the model it prunes."""
    batches = list(batches)
    if num_layers is not None and num_layers != model.config.num_hidden_layers:
        model = prune_layers(model, batches, num_layers, layer_score)
    if hidden_size is not None and (hidden_size != model.config.hidden_size or tie_word_embeddings is not None):
        model = prune_hidden(model, batches, hidden_size, tie_word_embeddings=tie_word_embeddings)
    if intermediate_size is not None and intermediate_size != model.config.intermediate_size:
        model = prune_ffn(model, batches, intermediate_size)
    return model
