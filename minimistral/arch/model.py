"""The Ministral 3 decoder: RMSNorm, grouped-query attention, SwiGLU, block, causal LM, KV cache.

Paper section 2 and Table 1: a dense decoder-only transformer with pre-norm RMSNorm,
GQA (32 query heads, 8 KV heads, head_dim 128), RoPE with YaRN and a position-based
softmax temperature, SwiGLU feed-forward, no biases, optionally tied embeddings.

Parameter names are those of transformers' ``Ministral3ForCausalLM`` so a state dict
moves between the two unchanged (``model.layers.0.self_attn.q_proj.weight`` ...).
The paper's FFN names map as W1 = ``gate_proj``, W3 = ``up_proj``, W2 = ``down_proj``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from minimistral.arch.config import ModelConfig
from minimistral.arch.rope import RotaryEmbedding, apply_rotary


class RMSNorm(nn.Module):
    r"""Root-mean-square layer norm: $y = g \odot x / \sqrt{\mathrm{mean}(x^2) + \epsilon}$.

    Normalised in fp32 (fp64 stays fp64) and cast back before the gain, as transformers does.
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [..., dim]
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class KVCache:
    """Keys and values of every layer for incremental decoding, preallocated and grown by doubling.

    ``length`` counts the positions already stored: the next token sits at absolute
    position ``length``, which is what RoPE and the softmax temperature must see.
    ``left_pad [batch]`` (or None): row b's first ``left_pad[b]`` positions are padding, so that prompts
    of different lengths share a batch; no query attends to them and row b's positions count from its
    first real token (transformers' ``position_ids`` from the attention mask).
    """

    def __init__(self, cfg: ModelConfig, batch: int, capacity: int, device=None, dtype=None, left_pad=None):
        shape = (batch, cfg.num_key_value_heads, capacity, cfg.head_dim)
        self.keys = [torch.empty(shape, device=device, dtype=dtype) for _ in range(cfg.num_hidden_layers)]
        self.values = [torch.empty(shape, device=device, dtype=dtype) for _ in range(cfg.num_hidden_layers)]
        self.length = 0
        self.left_pad = None if left_pad is None else left_pad.to(device)  # [batch]

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def reserve(self, new_tokens: int) -> None:
        """Make room for ``new_tokens`` more positions (amortised O(1) per token)."""
        need = self.length + new_tokens
        if need <= self.capacity:
            return
        self._reallocate(rows=1, capacity=max(need, 2 * self.capacity))

    def repeat_rows(self, n: int) -> None:
        """Row b becomes rows ``b * n .. b * n + n - 1`` (a prompt's cache, shared by its n continuations)."""
        self._reallocate(rows=n, capacity=self.capacity)
        if self.left_pad is not None:
            self.left_pad = self.left_pad.repeat_interleave(n, 0)

    def _reallocate(self, rows: int, capacity: int) -> None:
        """New storage ``[batch * rows, kv_heads, capacity, head_dim]`` per layer, each row's cached positions
        copied to its ``rows`` new rows."""
        for store in (self.keys, self.values):
            for i, old in enumerate(store):
                new = old.new_empty(old.shape[0] * rows, old.shape[1], capacity, old.shape[3])
                cached = old[:, :, : self.length]
                new[:, :, : self.length] = cached if rows == 1 else cached.repeat_interleave(rows, 0)
                store[i] = new

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v ``[batch, kv_heads, new, head_dim]`` at the current position; return all keys/values."""
        end = self.length + k.shape[2]
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


def attention_mask(q_len: int, past: int, sliding_window: int | None, device) -> torch.Tensor:
    """Boolean ``[q_len, past + q_len]``: query i (absolute past+i) may see key j iff j <= past+i
    and, with a sliding window W, j > past+i-W (transformers' ``sliding_window_overlay``)."""
    qpos = torch.arange(past, past + q_len, device=device)[:, None]
    kpos = torch.arange(past + q_len, device=device)[None, :]
    allowed = kpos <= qpos
    if sliding_window is not None:
        allowed &= kpos > qpos - sliding_window
    return allowed


class Attention(nn.Module):
    r"""Grouped-query attention with RoPE and the position-based query temperature.

    $\mathrm{head}_h = \mathrm{softmax}\big(\tau(p)\, R_p q_h \cdot (R_s k_{g(h)})^\top / \sqrt{d}\big)\, v_{g(h)}$,
    where query head $h$ reads KV head $g(h) = \lfloor h / G \rfloor$ with group size
    $G = n_q / n_{kv}$ (4 in every Ministral 3 size), $R_p$ is the rotary rotation at
    position $p$ and $\tau$ the temperature (``rope.query_temperature``).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.sliding_window = cfg.sliding_window
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, cfg.hidden_size, bias=False)

    def forward(self, x, rope, layer: int = 0, cache: KVCache | None = None, real=None):
        cos, sin, temp = rope  # [t, head_dim], [t, head_dim] (signed), [t, 1] or None ([b, 1, t, .] left-padded)
        q = rearrange(self.q_proj(x), "b t (h d) -> b h t d", d=self.head_dim)  # [b, n_heads, t, d]
        k = rearrange(self.k_proj(x), "b t (h d) -> b h t d", d=self.head_dim)  # [b, n_kv, t, d]
        v = rearrange(self.v_proj(x), "b t (h d) -> b h t d", d=self.head_dim)  # [b, n_kv, t, d]
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if temp is not None:
            q = q * temp  # tau(p) scales queries after RoPE; keys untouched (paper 2)
        past = cache.length if cache is not None else 0
        if cache is not None:
            k, v = cache.update(layer, k, v)  # [b, n_kv, past + t, d]
        out = self.attend(q, k, v, past, real)  # [b, n_heads, t, d]
        return self.o_proj(rearrange(out, "b h t d -> b t (h d)"))

    def attend(self, q, k, v, past: int, real=None) -> torch.Tensor:
        """softmax(q k^T / sqrt(d)) v with the causal (and sliding-window) mask, KV heads shared by groups.
        ``real [b, s]`` (left-padded rows, or None): which keys are tokens rather than padding."""
        t, s = q.shape[2], k.shape[2]
        window_covers = self.sliding_window is None or s <= self.sliding_window
        if t == 1 and window_covers:
            # Decoding one token: nothing to mask but padding, so fold the G query heads of each group
            # into the query axis and let them all read their shared KV head directly.
            qg = rearrange(q, "b (kv g) 1 d -> b kv g d", kv=self.n_kv)  # [b, n_kv, G, d]
            pad = None if real is None else rearrange(real, "b s -> b 1 1 s")
            out = F.scaled_dot_product_attention(qg, k, v, attn_mask=pad)  # [b, n_kv, G, d]
            return rearrange(out, "b kv g d -> b (kv g) 1 d")
        if past == 0 and window_covers and real is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        mask = attention_mask(t, past, self.sliding_window, q.device)  # [t, s]
        if real is not None:  # no query sees a padding key; a padding query sees itself (no empty softmax)
            own = torch.arange(s, device=q.device)[None, :] == torch.arange(past, s, device=q.device)[:, None]
            mask = rearrange(mask & real[:, None, :] | own, "b t s -> b 1 t s")
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)


class SwiGLU(nn.Module):
    r"""Gated feed-forward $W_2\big(\mathrm{SiLU}(W_1 x) \odot W_3 x\big)$ (paper section 2)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)  # W1
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)  # W3
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)  # W2

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [b, t, hidden] -> [b, t, hidden]
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    r"""Pre-norm decoder block: $h = x + \mathrm{Attn}(\mathrm{Norm}(x))$, $y = h + \mathrm{FFN}(\mathrm{Norm}(h))$."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)  # attention norm
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)  # FFN norm
        self.mlp = SwiGLU(cfg)

    def forward(self, x, rope, layer: int = 0, cache: KVCache | None = None, real=None):
        h = x + self.self_attn(self.input_layernorm(x), rope, layer, cache, real)
        return h + self.mlp(self.post_attention_layernorm(h))


class Decoder(nn.Module):
    """Token embeddings, the stack of blocks, and the final norm (transformers' ``Ministral3Model``)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary = RotaryEmbedding(cfg)
        self.checkpointing = False  # training: keep each block's input only, recompute the rest in backward

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None, embeds=None) -> torch.Tensor:
        """Final hidden states ``[b, t, hidden]``; ``embeds`` replaces the token embeddings (images put in)."""
        x = self.embed_tokens(input_ids) if embeds is None else embeds  # [b, t, hidden]
        past, t = (cache.length if cache is not None else 0), input_ids.shape[1]
        if cache is not None:
            cache.reserve(t)
        pad = cache.left_pad if cache is not None else None  # [b] left padding of each row, or None
        rope = self.rotary(past, t, x.device, x.dtype, pad)  # positions past..past+t-1 (less each row's padding)
        real = None if pad is None else torch.arange(past + t, device=x.device)[None, :] >= pad[:, None]  # [b, s]
        recompute = self.checkpointing and cache is None and torch.is_grad_enabled()
        for i, block in enumerate(self.layers):
            x = checkpoint(block, x, rope, i, use_reentrant=False) if recompute else block(x, rope, i, cache, real)
        if cache is not None:
            cache.length += input_ids.shape[1]
        return self.norm(x)


class Ministral3(nn.Module):
    """The causal language model: ``input_ids [batch, seq]`` -> ``logits [batch, seq, vocab]``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.model = Decoder(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.tie_weights()
        if self.lm_head.weight.device.type != "meta":
            self.init_weights()

    def tie_weights(self) -> None:
        """With ``tie_word_embeddings``, the head *is* the embedding matrix: one parameter, counted once."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def init_weights(self, std: float = 0.02) -> None:
        """N(0, std) for every matrix, ones for norm gains (transformers' initialisation), except
        the two writers of the residual stream per block (``o_proj``, ``down_proj``): N(0, std / sqrt(2L)),
        so the stream's variance does not grow with depth (GPT-2's scaled initialisation)."""
        writer_std = std / (2 * self.config.num_hidden_layers) ** 0.5
        for name, m in [*self.model.named_modules(), ("lm_head", self.lm_head)]:
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, std=writer_std if name.endswith(("o_proj", "down_proj")) else std)
            elif isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None, last_only: bool = False):
        """Logits ``[batch, seq, vocab]`` (``[batch, 1, vocab]`` with ``last_only``); ``cache`` is updated in place."""
        h = self.model(input_ids, cache)
        return self.lm_head(h[:, -1:] if last_only else h)

    def new_cache(self, batch: int, capacity: int, left_pad: torch.Tensor | None = None) -> KVCache:
        w = self.lm_head.weight
        return KVCache(self.config, batch, capacity, device=w.device, dtype=w.dtype, left_pad=left_pad)

    def num_parameters(self) -> int:
        """Distinct parameters (a tied embedding counted once)."""
        return sum(p.numel() for p in self.parameters())


def set_activation_checkpointing(model: nn.Module, on: bool = True) -> None:
    """Activation checkpointing for every decoder in ``model``: in training, each block keeps only its input
    and recomputes its activations during backward (the same gradients, one block's activations alive at a
    time instead of every block's, for one more forward of each block)."""
    for module in model.modules():
        if isinstance(module, Decoder):
            module.checkpointing = on


def skeleton(cfg: ModelConfig, vision=None) -> Ministral3:
    """The model on PyTorch's meta device: every parameter has its real shape and no storage (nothing initialised).

    With a ``vision.config.VisionConfig``, the vision-language model (``vision.model``) around the decoder.
    """
    with torch.device("meta"):
        if vision is None:
            return Ministral3(cfg)
        from minimistral.vision.model import VisionLanguageModel  # the vision package builds on this module

        return VisionLanguageModel(cfg, vision)


def assemble(cfg: ModelConfig, state: dict[str, torch.Tensor], clone: bool = True, vision=None) -> Ministral3:
    """A model of ``cfg`` whose parameters are the tensors of ``state`` (cloned unless ``clone=False``).

    The one way a model is made from existing tensors (loading, pruning, rescaling positions): a
    :func:`skeleton`, the tensors assigned in place of its meta parameters, the head re-tied. A
    tied config ignores ``state``'s ``lm_head.weight``; a parameter ``state`` lacks is an error.
    """
    model = skeleton(cfg, vision)
    tied = "lm_head.weight" if cfg.tie_word_embeddings else None
    state = {k: v.detach().clone() if clone else v for k, v in state.items() if k != tied}
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    missing = [k for k, p in model.named_parameters() if p.device.type == "meta"]
    if missing:
        raise RuntimeError(f"no tensor for {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if missing[1:] else ""))
    return model


def default_device() -> torch.device:
    """cuda if present, else mps, else cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
