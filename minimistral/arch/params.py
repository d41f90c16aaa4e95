"""Parameter counts of a config, exact, built on the meta device (no memory is allocated).

docs/paper.md §1: 3,429,006,336 / 8,489,553,920 / 13,506,073,600 / 23,572,403,200
for Ministral 3 3B / 8B / 14B and Mistral Small 3.1 (language model only, a tied head
counted once).
"""

from __future__ import annotations

from minimistral.arch.config import ModelConfig
from minimistral.arch.model import RMSNorm, skeleton
from minimistral.files import format_table

GROUPS = ("embeddings", "attention", "ffn", "norms")


def count_parameters(cfg: ModelConfig) -> int:
    """Distinct parameters of the language model (a tied embedding counted once)."""
    return skeleton(cfg).num_parameters()


def parameter_breakdown(cfg: ModelConfig) -> dict[str, int]:
    """Parameters per group: embeddings (input table and untied head), attention, FFN, norms."""
    counts = dict.fromkeys(GROUPS, 0)
    model = skeleton(cfg)
    for name, p in model.named_parameters():  # a tied head is not listed twice
        module = model.get_submodule(name.rpartition(".")[0])
        if isinstance(module, RMSNorm):
            group = "norms"
        elif ".self_attn." in name:
            group = "attention"
        elif ".mlp." in name:
            group = "ffn"
        else:
            group = "embeddings"
        counts[group] += p.numel()
    return counts


def params_table(configs: dict[str, ModelConfig]) -> str:
    """A plain-text table of shapes and exact parameter counts (``minimistral params``)."""
    rows = [("model", "layers", "hidden", "FFN", "q/kv heads", "head_dim", "tied", "rope", "LM params")]
    for name, c in configs.items():
        rope = (
            f"yarn x{c.yarn_factor:g}" if c.uses_yarn else f"linear x{c.linear_factor:g}" if c.uses_linear else "plain"
        )
        rows.append(
            (
                name,
                str(c.num_hidden_layers),
                str(c.hidden_size),
                str(c.intermediate_size),
                f"{c.num_attention_heads}/{c.num_key_value_heads}",
                str(c.head_dim),
                "yes" if c.tie_word_embeddings else "no",
                f"{rope}, theta {c.rope_theta:g}",
                f"{count_parameters(c):,}",
            )
        )
    return format_table(rows)


def vision_params_table(configs: dict[str, ModelConfig], vision) -> str:
    """Each model with image understanding: language model, vision encoder, projector, total (exact counts).

    ``vision`` is a ``vision.config.VisionConfig``: the encoder is shared (the same ViT in every
    model), the projector's output width is each model's own hidden size.
    """
    rows = [("model", "LM params", "vision encoder", "projector", "total with vision")]
    for name, c in configs.items():
        split = skeleton(c, vision).parameter_split()
        counts = (split["language model"], split["vision encoder"], split["projector"], sum(split.values()))
        rows.append((name, *(f"{v:,}" for v in counts)))
    return format_table(rows)


RATIOS = {  # name -> f(config, parent config)
    "depth/parent": lambda c, p: c.num_hidden_layers / p.num_hidden_layers,
    "hidden/parent": lambda c, p: c.hidden_size / p.hidden_size,
    "FFN/hidden": lambda c, p: c.intermediate_size / c.hidden_size,
    "q width/hidden": lambda c, p: c.num_attention_heads * c.head_dim / c.hidden_size,
    "params/parent": lambda c, p: count_parameters(c) / count_parameters(p),
}


def family_ratios_table(tiny: dict[str, ModelConfig], real: dict[str, ModelConfig], pairs: dict[str, str]) -> str:
    """Each tiny model's shape ratios next to those of the real model it stands for (parent first in ``pairs``)."""
    tiny_parent, real_parent = next(iter(pairs.items()))
    rows = [("tiny", "real", *RATIOS)]
    for t, r in pairs.items():
        cells = [f"{f(tiny[t], tiny[tiny_parent]):.2f} vs {f(real[r], real[real_parent]):.2f}" for f in RATIOS.values()]
        rows.append((t, r, *cells))
    return format_table(rows, left=2)
