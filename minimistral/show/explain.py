"""Small, inspectable views of the architecture, for ``notebooks/01_architecture.ipynb``.

Paper section 2 (architecture): a dense decoder with grouped-query attention (32 query
heads share 8 KV heads), RoPE extended to 256k tokens with YaRN (factor 16 over a
16,384-token window) and a position-based softmax temperature on the queries. Every
function here reads the library's own modules (``arch.rope``, ``arch.model``,
``arch.params``), so what the notebook plots is what the model computes. ``head_rule_scores``
reads a trained model's attention maps: how much each head follows a simple rule (previous token,
first token, start of the line, an earlier copy, the token after an earlier copy).
"""

from __future__ import annotations

import math
import tempfile

import torch
from einops import repeat

from minimistral.arch.config import ModelConfig
from minimistral.arch.hub import from_pretrained
from minimistral.arch.params import GROUPS, count_parameters, parameter_breakdown
from minimistral.arch.rope import inverse_frequencies, query_temperature, rope_frequencies, yarn_ramp
from minimistral.files import read_csv
from minimistral.paths import paper_dir

REGIONS = ("extrapolated", "blended", "interpolated")


# ----------------------------------------------------------------------------- RoPE / YaRN
def yarn_regions(cfg: ModelConfig) -> dict:
    r"""Per RoPE channel pair: frequency, wavelength, YaRN ramp and region (paper section 2).

    YaRN (the paper's long-context RoPE) treats channel pairs by how many full turns
    they make inside the original window $L$ (16,384 tokens for Ministral 3):

    - ``'extrapolated'`` (ramp 0): fast pairs, at least ``beta_fast`` turns in the window.
      Their frequency is kept; they encode local order and see no new angles at long range.
    - ``'interpolated'`` (ramp 1): slow pairs, at most ``beta_slow`` turns. Their frequency is
      divided by the factor $s$, so 16x longer positions map onto angles seen in training.
    - ``'blended'`` (0 < ramp < 1): a linear mix in between.

    Returns a dict of ``[head_dim/2]`` tensors ``pair``, ``original_frequency``,
    ``yarn_frequency``, ``wavelength`` and ``yarn_wavelength`` (tokens per turn,
    $2\pi/\omega$), ``rotations`` (turns in the original window, $L/\lambda$), ``ramp``;
    ``label`` (list of region names); and scalars ``low``, ``high`` (the ramp's pair
    range), ``factor`` and ``original_max``. A config without YaRN has ramp 0 everywhere.
    """
    half = cfg.head_dim // 2
    original = rope_frequencies(cfg.head_dim, cfg.rope_theta)  # [half]
    yarn, _ = inverse_frequencies(cfg)  # [half]; equals `original` without YaRN
    window = cfg.original_max_position_embeddings or cfg.max_position_embeddings
    if cfg.uses_yarn:
        r = yarn_ramp(cfg)
        ramp, low, high, factor = r.ramp, r.low, r.high, cfg.yarn_factor
    else:
        ramp, low, high, factor = torch.zeros(half), float(half), float(half), 1.0
    wavelength = 2 * math.pi / original  # [half], tokens per full turn
    labels = ["extrapolated" if x == 0 else "interpolated" if x == 1 else "blended" for x in ramp.tolist()]
    return {
        "pair": torch.arange(half),
        "original_frequency": original,
        "yarn_frequency": yarn,
        "wavelength": wavelength,
        "yarn_wavelength": 2 * math.pi / yarn,
        "rotations": window / wavelength,
        "ramp": ramp,
        "label": labels,
        "low": low,
        "high": high,
        "factor": factor,
        "original_max": window,
    }


def temperature_schedule(cfg: ModelConfig, max_position: int | None = None) -> dict[str, torch.Tensor]:
    r"""The query temperature $\tau(p) = 1 + \beta \ln(1 + \lfloor p/L \rfloor)$, window by window (paper section 2).

    Positions ``0 .. max_position - 1`` fall into windows of $L$ tokens (16,384 for
    Ministral 3); $\tau$ is constant inside each. Returns ``edges`` ``[n + 1]`` (0, L, 2L,
    .., ``max_position``) and ``tau`` ``[n]`` (the value on ``[edges[i], edges[i+1])``),
    the arguments of ``matplotlib.pyplot.stairs``. ``max_position`` defaults to the
    config's context length (262,144 for Ministral 3, whose last position is 262,143).
    """
    if not cfg.uses_temperature:
        raise ValueError("this config has no position-based temperature (llama_4_scaling_beta is None)")
    window = cfg.original_max_position_embeddings
    end = cfg.max_position_embeddings if max_position is None else max_position
    starts = torch.arange(0, end, window, dtype=torch.float64)  # [n] first position of each window
    edges = torch.cat([starts, torch.tensor([float(end)], dtype=torch.float64)])  # [n + 1]
    return {"edges": edges, "tau": query_temperature(starts, cfg.llama_4_scaling_beta, window)}


# ----------------------------------------------------------------------------- GQA
def kv_head_of_query_head(cfg: ModelConfig) -> list[int]:
    r"""Which KV head each query head reads (grouped-query attention, paper section 2, Table 1).

    Query head $h$ reads KV head $\lfloor h / G \rfloor$, $G$ = ``num_attention_heads /
    num_key_value_heads`` consecutive query heads per group (32 / 8 = 4 in Ministral 3),
    the layout of ``einops.repeat(k, 'b kv t d -> b (kv g) t d')`` and of SDPA's ``enable_gqa``.
    """
    groups = torch.arange(cfg.num_key_value_heads)  # [n_kv]
    return repeat(groups, "kv -> (kv g)", g=cfg.num_key_value_groups).tolist()  # [n_heads]


# ----------------------------------------------------------------------------- parameters
def parameter_shares(configs: dict[str, ModelConfig]) -> dict[str, dict[str, int]]:
    """Parameters per group (embeddings, attention, FFN, norms) for each config (paper section 2, Table 1).

    Each breakdown is checked to add up to the exact ``count_parameters`` total.
    """
    out = {}
    for name, cfg in configs.items():
        parts = parameter_breakdown(cfg)
        total = count_parameters(cfg)
        if sum(parts.values()) != total:
            raise AssertionError(f"{name}: breakdown {sum(parts.values())} != total {total}")
        out[name] = {g: parts[g] for g in GROUPS}
    return out


PAPER_COLUMNS = {  # CONFIGS name -> column of data/paper/table1_architecture.csv
    "ministral-3-3b": "Ministral3-3B",
    "ministral-3-8b": "Ministral3-8B",
    "ministral-3-14b": "Ministral3-14B",
    "mistral-small-3.1-24b": "MistralSmall3.1-24B",
}


def paper_parameter_counts() -> dict[str, int]:
    """The exact language-model parameter counts of docs/paper.md §1, read from ``data/paper/table1_architecture.csv``.

    Keyed by ``CONFIGS`` name (``"ministral-3-3b"`` ...); computed with transformers on the meta
    device, a tied head counted once (the paper itself rounds to 3B / 8B / 14B).
    """
    row = next(r for r in read_csv(paper_dir() / "table1_architecture.csv") if r["field"] == "lm_params")
    return {name: int(row[column]) for name, column in PAPER_COLUMNS.items()}


# ----------------------------------------------------------------------------- what trained heads attend to
HEAD_RULES = ("previous token", "first token", "start of the line", "earlier copy", "after an earlier copy")


def rule_targets(input_ids: torch.Tensor, line_ends: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    r"""For each rule of ``HEAD_RULES``, the (query $i$, key $j$) cells it points at: bool ``[seq, seq]``.

    ``input_ids`` ``[seq]`` starts with ``<s>``; ``line_ends`` ``[seq]`` (bool) marks the tokens whose text
    ends a line (without it, ``'start of the line'`` is left out). Rows $i \ge 2$ only (row 1's previous
    token *is* the first one):

    - ``'previous token'``: $j = i - 1$;
    - ``'first token'``: $j = 0$, the ``<s>`` many trained heads rest on when nothing else fits;
    - ``'start of the line'``: $j$ = the first token of the line that $i$ is on (position 1 on the first line);
    - ``'earlier copy'``: every $j < i$ holding the same token as $i$ (a duplicate-token head);
    - ``'after an earlier copy'``: $j = k + 1$ for every earlier copy $k$, with $k + 1 < i$: the token that
      followed the current token last time, what an induction head reads to predict a repeat.
    """
    t = input_ids.shape[0]
    i = torch.arange(t)[:, None]  # [t, 1] query positions
    j = torch.arange(t)[None, :]  # [1, t] key positions
    rows = i >= 2  # [t, 1]
    same = (input_ids[:, None] == input_ids[None, :]) & (j < i) & (j >= 1)  # [t, t]: earlier copies (not <s>)
    after = torch.zeros(t, t, dtype=torch.bool)
    after[:, 1:] = same[:, :-1]  # key k + 1 for every earlier copy k
    targets = {"previous token": rows & (j == i - 1), "first token": rows & (j == 0)}
    if line_ends is not None:
        ends = torch.where(line_ends.bool(), torch.arange(t), 0)  # [t]: own index where a line ends, else 0
        last_end = torch.cat([torch.zeros(1, dtype=torch.long), ends.cummax(0).values[:-1]])  # [t]: before i
        targets["start of the line"] = rows & (j == last_end[:, None] + 1)
    targets["earlier copy"] = rows & same
    targets["after an earlier copy"] = rows & after & (j < i)
    return targets


def head_rule_scores(
    probs: torch.Tensor, input_ids: torch.Tensor, line_ends: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    r"""How much each head follows each rule: attention on the rule's cells, averaged over the rows that have one.

    ``probs`` ``[..., seq, seq]`` (e.g. ``[layers, heads, seq, seq]`` from
    ``attention_maps.attention_probabilities``); ``input_ids`` and ``line_ends`` as for :func:`rule_targets`.
    For rule $R$ with target cells $T_i$ in row $i$:
    $\mathrm{score} = \mathrm{mean}_{i: T_i \ne \emptyset} \sum_{j \in T_i} P_{ij}$, between 0 and 1; shape
    ``probs.shape[:-2]``. Scoring :func:`uniform_attention` gives what a head that spreads every row evenly
    would get. NaN for a rule whose cells the text never has.
    """
    out = {}
    for rule, cells in rule_targets(input_ids, line_ends).items():
        rows = cells.any(-1)  # [t]
        mass = (probs * cells).sum(-1)[..., rows]  # [..., rows with a target]
        out[rule] = mass.mean(-1)
    return out


def strongest_heads(scores: dict[str, torch.Tensor]) -> dict[str, tuple[int, int, float]]:
    """For each rule, the ``(layer, head, score)`` of the head that follows it most; ``scores`` as
    :func:`head_rule_scores` returns them for ``[layers, heads, seq, seq]`` probabilities."""
    out = {}
    for rule, s in scores.items():
        layer, head = divmod(int(s.argmax()), s.shape[-1])
        out[rule] = (layer, head, s[layer, head].item())
    return out


def uniform_attention(seq_len: int) -> torch.Tensor:
    """The causal attention of a head with no preference: row $i$ puts $1/(i+1)$ on each key $0..i$, ``[seq, seq]``."""
    allowed = torch.ones(seq_len, seq_len).tril()
    return allowed / allowed.sum(-1, keepdim=True)


# ----------------------------------------------------------------------------- tiny demo model
def demo_config(**changes) -> ModelConfig:
    """A tiny Ministral 3 shape with every paper section 2 feature of the real one, scaled down for a CPU.

    8 query heads share 2 KV heads, head_dim 32, YaRN factor 8 over a 32-token
    window, temperature beta 0.1: a 128-token input crosses the window 3 times, so
    the temperature takes 4 values and all three YaRN regions are present.
    """
    base = dict(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=256,
        rope_theta=1e4,
        yarn_factor=8.0,
        original_max_position_embeddings=32,
        llama_4_scaling_beta=0.1,
    )
    return ModelConfig(**(base | changes))


def transformers_round_trip(cfg: ModelConfig, seq_len: int, seed: int = 0) -> dict:
    """Build a random ``transformers`` model for ``cfg``, save it, load it with :func:`from_pretrained`.

    The reference (``transformers.Ministral3ForCausalLM``, paper section 2's architecture
    as released) is saved with its own ``save_pretrained`` into a temporary directory and
    read back by minimistral; both run the same ``[1, seq_len]`` random tokens in float32.
    Returns ``max_abs_diff`` of the logits, the ``logits_shape``, and the loaded ``config``.
    Needs ``transformers`` (a dev dependency) and a config with the temperature on.
    """
    import transformers

    if not cfg.uses_temperature:
        raise ValueError("transformers' ministral3 always applies the temperature; use a config with it")
    hf_cfg = transformers.Ministral3Config(**cfg.to_hf_dict())
    torch.manual_seed(seed)
    reference = transformers.Ministral3ForCausalLM(hf_cfg).eval()
    input_ids = torch.randint(0, cfg.vocab_size, (1, seq_len), generator=torch.Generator().manual_seed(seed))
    with tempfile.TemporaryDirectory() as d:
        reference.save_pretrained(d)
        ours = from_pretrained(d)
    with torch.no_grad():
        want = reference(input_ids).logits.float()  # [1, seq, vocab]
        got = ours(input_ids).float()  # [1, seq, vocab]
    return {
        "max_abs_diff": (want - got).abs().max().item(),
        "logits_shape": tuple(got.shape),
        "config": ours.config,
    }
