"""Model configuration: every field of transformers' ``Ministral3Config`` that changes the math.

Paper section 2 (architecture, Table 1). One flat dataclass describes both the
children (Ministral 3: YaRN + position-based softmax temperature) and the parent
(Mistral Small 3.1: plain RoPE, ``yarn_factor=None``, ``llama_4_scaling_beta=None``).
``linear_factor`` selects plain position interpolation instead of YaRN (Chen et al. 2023),
the baseline the long-context notebook compares YaRN against; no released model uses it.

``from_hf_dict`` / ``to_hf_dict`` translate to and from a Hugging Face ``config.json``
(``model_type`` ``ministral3``, ``mistral``, or the text part of ``mistral3``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields

from minimistral.errors import CheckpointError


@dataclass(frozen=True)
class ModelConfig:
    """Shape and positional-encoding hyper-parameters of a Ministral 3 decoder."""

    vocab_size: int = 131072
    hidden_size: int = 4096
    intermediate_size: int = 14336
    num_hidden_layers: int = 34
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    head_dim: int = 128  # independent of hidden_size / num_attention_heads (paper 2, Table 1)
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 262144
    # --- RoPE (paper 2): theta, and YaRN when yarn_factor is not None -------------------
    rope_theta: float = 1e6
    yarn_factor: float | None = 16.0
    original_max_position_embeddings: int | None = 16384  # the short-context window
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float | None = 1.0
    mscale_all_dim: float | None = 1.0
    attention_factor: float | None = None  # explicit YaRN cos/sin scale; derived when None
    yarn_truncate: bool = True  # round the YaRN correction range outward (transformers default)
    # --- linear position interpolation (Chen et al. 2023): omega_i / s for every channel ----
    linear_factor: float | None = None  # s; exclusive with yarn_factor; a baseline, not in Ministral 3
    # --- position-based softmax temperature; None switches it off ----------------------
    llama_4_scaling_beta: float | None = 0.1
    # --- Mistral-family option absent from Ministral 3 (None = full causal attention) --
    sliding_window: int | None = None
    # --- token ids (do not change the math, kept for generation and round trips) -------
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    pad_token_id: int | None = 11

    def __post_init__(self):
        for f in fields(self):
            _check_type(f"ModelConfig.{f.name}", getattr(self, f.name), f.type)
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")
        if self.linear_factor is not None and self.yarn_factor is not None:
            raise ValueError("linear_factor and yarn_factor are exclusive: choose one position scaling")
        if self.linear_factor is not None and self.linear_factor <= 0:
            raise ValueError(f"linear_factor must be > 0, got {self.linear_factor}")
        needs_window = self.yarn_factor is not None or self.llama_4_scaling_beta is not None
        if needs_window and not self.original_max_position_embeddings:
            raise ValueError("YaRN and the softmax temperature need original_max_position_embeddings")

    @property
    def num_key_value_groups(self) -> int:
        """How many query heads share one KV head (GQA group size)."""
        return self.num_attention_heads // self.num_key_value_heads

    @property
    def uses_yarn(self) -> bool:
        return self.yarn_factor is not None

    @property
    def uses_linear(self) -> bool:
        return self.linear_factor is not None

    @property
    def uses_temperature(self) -> bool:
        return self.llama_4_scaling_beta is not None

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ HF config.json
    def to_hf_dict(self) -> dict:
        """A ``config.json`` dict that transformers loads into the same model.

        With the temperature switched on the file is a ``Ministral3ForCausalLM``; without
        it, a ``MistralForCausalLM`` (transformers' ministral3 always applies the
        temperature, so a parent with plain RoPE must be written as ``mistral``).
        """
        rope: dict = {"rope_type": "default", "rope_theta": float(self.rope_theta)}
        if self.uses_yarn:
            rope.update(
                rope_type="yarn",
                factor=float(self.yarn_factor),
                original_max_position_embeddings=self.original_max_position_embeddings,
                beta_fast=float(self.beta_fast),
                beta_slow=float(self.beta_slow),
                mscale=self.mscale,
                mscale_all_dim=self.mscale_all_dim,
                truncate=self.yarn_truncate,
            )
            if self.attention_factor is not None:
                rope["attention_factor"] = float(self.attention_factor)
        if self.uses_linear:
            rope.update(rope_type="linear", factor=float(self.linear_factor))
        if self.uses_temperature:
            rope["llama_4_scaling_beta"] = float(self.llama_4_scaling_beta)
            rope["original_max_position_embeddings"] = self.original_max_position_embeddings
        model_type = "ministral3" if self.uses_temperature else "mistral"
        arch = "Ministral3ForCausalLM" if self.uses_temperature else "MistralForCausalLM"
        return {
            "architectures": [arch],
            "model_type": model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "rope_parameters": rope,
            "sliding_window": self.sliding_window,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
        }

    @classmethod
    def from_hf_dict(cls, cfg: dict, source: str = "config.json") -> ModelConfig:
        """Parse a transformers ``config.json`` (ministral3, mistral, or mistral3's text part).

        Raises :class:`CheckpointError` naming ``source`` and the key for an unknown
        ``model_type``, a missing key or a value of the wrong type.
        """
        model_type = cfg.get("model_type")
        if model_type == "mistral3":
            if not isinstance(cfg.get("text_config"), dict):
                raise CheckpointError(f"{source}: mistral3 config has no 'text_config' object")
            text = cls.from_hf_dict(cfg["text_config"], f"{source} (text_config)")
            # transformers 5 ties the multimodal model's head by the top-level flag (default True)
            tied = cfg.get("tie_word_embeddings", True)
            _typed(source, "tie_word_embeddings", tied, ((bool,), False))
            return text.replace(tie_word_embeddings=tied)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise CheckpointError(
                f"{source}: unsupported model_type {model_type!r} "
                f"(supported: {', '.join(sorted(SUPPORTED_MODEL_TYPES | {'mistral3'}))})"
            )
        return _parse_text_config(cls, cfg, model_type, source)


YARN_ONLY = ("beta_fast", "beta_slow", "mscale", "mscale_all_dim", "attention_factor", "yarn_truncate")
SUPPORTED_MODEL_TYPES = frozenset({"ministral3", "mistral"})
HF_DEFAULTS = {  # transformers' own defaults for keys a config.json may leave out
    "ministral3": {"rms_norm_eps": 1e-5, "tie_word_embeddings": False, "sliding_window": None},
    "mistral": {"rms_norm_eps": 1e-6, "tie_word_embeddings": False, "sliding_window": 4096},
}


def _get(cfg: dict, key: str, source: str, default=KeyError):
    if key in cfg:
        return cfg[key]
    if default is KeyError:
        raise CheckpointError(f"{source}: missing key {key!r}")
    return default


def _parse_text_config(cls, cfg: dict, model_type: str, source: str) -> ModelConfig:
    defaults = HF_DEFAULTS[model_type]
    heads = _get(cfg, "num_attention_heads", source)
    hidden = _get(cfg, "hidden_size", source)
    _typed(source, "num_attention_heads", heads, _INT)
    _typed(source, "hidden_size", hidden, _INT)
    head_dim = cfg.get("head_dim") or hidden // heads
    rope = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    theta = rope.get("rope_theta", cfg.get("rope_theta"))
    if theta is None:
        raise CheckpointError(f"{source}: missing key 'rope_parameters.rope_theta'")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "yarn", "linear"):
        raise CheckpointError(f"{source}: unsupported rope_parameters.rope_type {rope_type!r}")
    if rope.get("partial_rotary_factor", 1.0) != 1.0:
        raise CheckpointError(f"{source}: partial_rotary_factor != 1 is not supported")
    beta = rope.get("llama_4_scaling_beta") if model_type == "ministral3" else None
    values = {
        "vocab_size": _get(cfg, "vocab_size", source),
        "hidden_size": hidden,
        "intermediate_size": _get(cfg, "intermediate_size", source),
        "num_hidden_layers": _get(cfg, "num_hidden_layers", source),
        "num_attention_heads": heads,
        "num_key_value_heads": cfg.get("num_key_value_heads") or heads,
        "head_dim": head_dim,
        "rms_norm_eps": cfg.get("rms_norm_eps", defaults["rms_norm_eps"]),
        "tie_word_embeddings": cfg.get("tie_word_embeddings", defaults["tie_word_embeddings"]),
        "max_position_embeddings": cfg.get("max_position_embeddings", 131072),
        "rope_theta": theta,
        "yarn_factor": rope.get("factor") if rope_type == "yarn" else None,
        "original_max_position_embeddings": rope.get(
            "original_max_position_embeddings", cfg.get("original_max_position_embeddings")
        ),
        "beta_fast": rope.get("beta_fast") or 32.0,
        "beta_slow": rope.get("beta_slow") or 1.0,
        "mscale": rope.get("mscale"),
        "mscale_all_dim": rope.get("mscale_all_dim"),
        "attention_factor": rope.get("attention_factor"),
        "yarn_truncate": rope.get("truncate", True),
        "linear_factor": rope.get("factor") if rope_type == "linear" else None,
        "llama_4_scaling_beta": beta,
        "sliding_window": cfg.get("sliding_window", defaults["sliding_window"]),
        "bos_token_id": cfg.get("bos_token_id"),
        "eos_token_id": _first(cfg.get("eos_token_id")),
        "pad_token_id": cfg.get("pad_token_id"),
    }
    if rope_type != "yarn":  # YaRN-only knobs keep their defaults: they change nothing here
        for key in YARN_ONLY:
            values[key] = getattr(cls, key)
    if rope_type == "linear" and values["linear_factor"] is None:
        raise CheckpointError(f"{source}: missing key 'rope_parameters.factor' (rope_type 'linear')")
    if rope_type == "yarn" and values["yarn_factor"] is None:
        values["yarn_factor"] = values["max_position_embeddings"] / values["original_max_position_embeddings"]
    for f in fields(cls):
        spec = _annotation(f.type)
        _typed(source, f.name, values[f.name], spec)
        if values[f.name] is not None and spec[0] == _TYPES["float"]:
            values[f.name] = float(values[f.name])
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: {exc}") from None


def _first(x):
    return x[0] if isinstance(x, list) and x else x


# ------------------------------------------------------------------ type checks
_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,)}
_INT = ((int,), False)


def _annotation(t: str) -> tuple[tuple[type, ...], bool]:
    """'float | None' -> ((int, float), True)."""
    parts = [p.strip() for p in t.split("|")]
    return _TYPES[parts[0]], "None" in parts


def _ok(value, spec) -> bool:
    types, optional = spec
    if value is None:
        return optional
    if isinstance(value, bool) and bool not in types:
        return False
    if not isinstance(value, types):
        return False
    return not (isinstance(value, float) and not math.isfinite(value))


def _typed(source: str, key: str, value, spec) -> None:
    if not _ok(value, spec):
        names = "/".join(t.__name__ for t in spec[0]) + (" or null" if spec[1] else "")
        raise CheckpointError(f"{source}: key {key!r} must be {names}, got {value!r} ({type(value).__name__})")


def _check_type(name: str, value, annotation: str) -> None:
    spec = _annotation(annotation)
    if not _ok(value, spec):
        names = "/".join(t.__name__ for t in spec[0])
        raise TypeError(f"{name} must be {names}, got {value!r}")


# ------------------------------------------------------------------ the two families
PLAIN_ROPE = dict(yarn_factor=None, original_max_position_embeddings=None, llama_4_scaling_beta=None)


def _member(heads: tuple[int, int, int], vocab: int, theta: float, rope: dict, max_len: int, **shape) -> ModelConfig:
    """One model of a family: (q heads, kv heads, head_dim), vocabulary, RoPE settings and its own shape."""
    q, kv, head_dim = heads
    return ModelConfig(
        vocab_size=vocab,
        num_attention_heads=q,
        num_key_value_heads=kv,
        head_dim=head_dim,
        rope_theta=theta,
        max_position_embeddings=max_len,
        **rope,
        **shape,
    )


def _real(layers: int, hidden: int, ffn: int, tied: bool, theta: float, yarn: bool = True) -> ModelConfig:
    child = dict(yarn_factor=16.0, original_max_position_embeddings=16384, llama_4_scaling_beta=0.1)
    return _member(
        (32, 8, 128), 131072, theta, child if yarn else PLAIN_ROPE, 262144 if yarn else 131072,
        num_hidden_layers=layers, hidden_size=hidden, intermediate_size=ffn, tie_word_embeddings=tied,
    )  # fmt: skip


# docs/paper.md §1 / paper Table 1; rope values from the released configs.
CONFIGS: dict[str, ModelConfig] = {
    "ministral-3-3b": _real(26, 3072, 9216, True, 1e6),
    "ministral-3-8b": _real(34, 4096, 14336, False, 1e6),
    "ministral-3-14b": _real(40, 5120, 16384, False, 1e9),
    "mistral-small-3.1-24b": _real(40, 5120, 32768, False, 1e9, yarn=False),
}

TINY_VOCAB = 4096
TINY_WINDOW = 256  # the short-context window (the real 16,384); YaRN x4 extends it to 1,024


def _tiny(layers: int, hidden: int, ffn: int, tied: bool, child: bool = True) -> ModelConfig:
    """The real family scaled down, same shape: depth 40:40:34:26 -> 8:8:7:5, hidden 1:1:0.8:0.6 of 320,
    each model's own FFN/hidden ratio, 8 query / 2 KV heads of head_dim 32 in every size (so the query
    width 256 sits between the tiny-3b and tiny-14b hidden sizes, as 4096 sits between 3072 and 5120).
    rope_theta 1e4, the classic base for short windows (the real family uses 1e6 / 1e9)."""
    yarn = dict(yarn_factor=4.0, original_max_position_embeddings=TINY_WINDOW, llama_4_scaling_beta=0.1)
    return _member(
        (8, 2, 32), TINY_VOCAB, 10000.0, yarn if child else PLAIN_ROPE, 4 * TINY_WINDOW if child else TINY_WINDOW,
        num_hidden_layers=layers, hidden_size=hidden, intermediate_size=ffn, tie_word_embeddings=tied,
    )  # fmt: skip


TINY_CONFIGS: dict[str, ModelConfig] = {
    "tiny-24b": _tiny(8, 320, 2048, tied=False, child=False),  # FFN/hidden 6.4 as 32768/5120
    "tiny-14b": _tiny(8, 320, 1024, tied=False),  # 3.2 as 16384/5120
    "tiny-8b": _tiny(7, 256, 896, tied=False),  # 3.5 as 14336/4096
    "tiny-3b": _tiny(5, 192, 576, tied=True),  # 3.0 as 9216/3072, tied as the 3B
}
TINY_OF_REAL = dict(
    zip(TINY_CONFIGS, ["mistral-small-3.1-24b", "ministral-3-14b", "ministral-3-8b", "ministral-3-3b"], strict=True)
)


def get_config(name: str) -> ModelConfig:
    """A named configuration: the real family (``CONFIGS``) or the tiny one (``TINY_CONFIGS``)."""
    known = CONFIGS | TINY_CONFIGS
    try:
        return known[name]
    except KeyError:
        raise KeyError(f"unknown config {name!r}; known: {', '.join(known)}") from None
