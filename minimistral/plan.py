r"""Memory planner: the bytes one device holds to train a student, alone or distilled from a teacher.

``minimistral plan --teacher ministral-3-14b --student ministral-3-8b --gpus 8 --gpu-memory 80`` prints,
per device, a column for DDP (every device holds the whole model) and one for FSDP2 (the model sharded
over the ``--gpus`` devices), and whether each fits. Everything is arithmetic on exact parameter counts
(:func:`~minimistral.arch.params.count_parameters`, built on the meta device) and on the activation
formula below, which :func:`saved_activation_bytes` measures on small models (tests/test_plan.py: equal
within 0.1% in fp32, under CPU bf16 autocast, and on bf16 weights).
The FSDP2 column is the engine's ``--fsdp`` (``distributed.shard``), the checkpointing rows its
``--activation-checkpointing`` (README, "more than one process").

Assumptions (the output header repeats them)
--------------------------------------------
* The engine (``minimistral.train``) keeps fp32 master weights, trains under bf16 autocast on CUDA,
  with AdamW. Per trainable parameter (P of them): weights 4 B, gradients 4 B, AdamW's two fp32
  moments 8 B.
* DDP: every device holds all of that, plus autocast's bf16 copy of every matmul weight, 2 B per
  parameter of an ``nn.Linear`` (the embedding lookup and the norm gains are not cast): the linear
  layers save the copies for backward, so they live as long as the activations. The gradient buckets
  are the gradients (``gradient_as_bucket_view=True``). The engine's own all-reduce
  (``distributed.sum_gradients``) concatenates the gradients into one flat buffer instead, another
  4 B per parameter after backward, once the activations are freed: not counted.
* FSDP2: weights, gradients and AdamW state divided by N; the units (each decoder block, the
  embedding, the head) are all-gathered in bf16 (``MixedPrecisionPolicy(param_dtype=torch.bfloat16)``),
  one in use and the next prefetched: $2 \times 2\,\mathrm{B} \times$ the largest unit of student or
  teacher. The forward then runs on bf16 weights, which changes the activations' dtypes (below), and
  leaves autocast nothing to cast.
* Activations are what autograd saves for backward (formula below), attention by a fused kernel
  (flash: q, k, v, the output and an fp32 log-sum-exp; never the $T \times T$ scores). With activation
  checkpointing (every block wrapped): each block's input is kept, and one block's activations live
  while it is recomputed in backward.
* The teacher is frozen and held in ``--teacher-dtype`` (bf16: 2 B per parameter), runs under
  ``torch.no_grad`` (no activations, no gradients, no optimizer), and is sharded like the student
  under FSDP2.
* The loss (see :func:`loss_buffer_bytes`): plain training's cross-entropy, or distillation's chunked
  KL (``minimistral.distill``, chunks of ``chunk_size`` tokens, 1,024 by default, as ``DistillLoss``).
* The totals add every row as if all were alive at once, which they nearly are at the start of
  backward (the loss's backward runs first, with every activation saved): an upper bound on the peak.
  Not counted: the CUDA context and allocator fragmentation (about 1-3 GB).
* GB means $10^9$ bytes (a card sold as "80 GB" holds 80 GiB = 85.9 GB).

Activations
-----------
Per token and per layer, the tensors a block (``arch/model.py``) saves for backward, in bytes, with
hidden size $h$, FFN width $f$, $H_q$ query and $H_{kv}$ key/value heads of width $d$:

$$A_{layer} = x + r_1 + n_1 + a_1 + q + k + v + o + lse + x' + r_2 + n_2 + a_2 + g + u + \sigma + m$$

====  =============  ==================================================================================
term  bytes          the tensor
====  =============  ==================================================================================
x     $4h$           the block's input, fp32 where the attention norm squares it (``xf.pow(2)``)
r_1   $4$            its inverse RMS, ``rsqrt(mean(xf^2) + eps)``, fp32
n_1   $s\,h$         ``xf * r_1`` cast back to the stream's dtype, saved by the gain's multiply
a_1   $k_a\,c\,h$    the norm's output, saved by ``q_proj``, ``k_proj``, ``v_proj`` ($k_a$ copies)
q     $c\,H_q d$     the queries after RoPE and the temperature, saved by attention
k     $c\,H_{kv} d$  the keys after RoPE
v     $c\,H_{kv} d$  the values
o     $c\,H_q d$     attention's output (also ``o_proj``'s input: the same storage)
lse   $4 H_q$        attention's fp32 log-sum-exp, one per query head
x'    $4h$           the residual after attention, fp32 where the FFN norm squares it
r_2   $4$            as $r_1$, for the FFN norm
n_2   $s\,h$         as $n_1$
a_2   $k_f\,c\,h$    the FFN norm's output, saved by ``gate_proj`` and ``up_proj`` ($k_f$ copies)
g     $c f$          ``gate_proj(a_2)``, saved by SiLU
u     $c f$          ``up_proj(a_2)``, saved by the product
σ     $c f$          ``silu(g)``, saved by the product
m     $c f$          ``silu(g) * u``, saved by ``down_proj``
====  =============  ==================================================================================

Bytes per element depend on the precision: $c$ for matmul and attention tensors, $s$ for the
residual stream, and how many copies of a norm's output its projections keep:

=========  ===  ===  =====  =====  ====================================================================
precision  c    s    k_a    k_f    when
=========  ===  ===  =====  =====  ====================================================================
fp32       4    4    1      1      no autocast (the CPU); every tensor fp32, one shared projection input
autocast   2    4    3      2      fp32 weights under bf16 autocast (DDP): the fp32 embedding makes the
                                   stream fp32 (bf16 + fp32 promotes to fp32), and autocast casts the
                                   norm's output once per projection
bf16       2    2    1      1      bf16 weights (FSDP2's all-gathered ones): the norms upcast to fp32
=========  ===  ===  =====  =====  ====================================================================

After the last block, per token: the final norm's $x_L$ ($4h$), $r$ ($4$) and $n$ ($s\,h$), the
input of ``lm_head`` ($c\,h$), the int64 token ids (8), and for plain training the cross-entropy's
fp32 log-probabilities ($4V$: ``next_token_nll`` calls ``logits.float()`` first) and the int64
targets (8); distillation keeps the logits instead (in its loss buffer). Per position, shared by every
layer and row: RoPE's cos and signed sin ($2 s d$) and the temperature ($s$, when used). With batch
$B$, sequence $T$ and $L$ layers:

$$A = B T\,(L\,A_{layer} + A_{head}) + T A_{rope}, \qquad
  A_{ckpt} = B T\,(L\,s\,h + A_{layer} + A_{head}) + T A_{rope}.$$
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from minimistral.arch.config import CONFIGS, TINY_CONFIGS, ModelConfig
from minimistral.arch.params import count_parameters, parameter_breakdown
from minimistral.files import format_table
from minimistral.train import lm_loss

GB = 1e9  # bytes
KL_CHUNK = 1024  # DistillLoss's default chunk_size (tests/test_plan.py checks that they agree)
LOGIT_BYTES = 2  # the logits are bf16: lm_head's output under autocast, or on bf16 weights
MODELS = CONFIGS | TINY_CONFIGS

# bytes per element, per precision, of each kind of tensor (module docstring, "Activations"): always fp32,
# the residual stream's dtype (s), the matmuls' and attention's dtype (c), token ids
BYTES = {
    "fp32": {"fp32": 4, "stream": 4, "compute": 4, "int64": 8},
    "autocast": {"fp32": 4, "stream": 4, "compute": 2, "int64": 8},
    "bf16": {"fp32": 4, "stream": 2, "compute": 2, "int64": 8},
}
# copies of a norm's output that its projections keep, (attention k_a, FFN k_f): autocast casts once per projection
PROJECTION_COPIES = {"fp32": (1, 1), "autocast": (3, 2), "bf16": (1, 1)}
# what each strategy's forward runs on: fp32 weights under autocast, or FSDP2's all-gathered bf16 weights
STRATEGY_PRECISION = {"DDP": "autocast", "FSDP2": "bf16"}
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


# ----------------------------------------------------------------------------- activations: the formula
@dataclass(frozen=True)
class Term:
    """One saved tensor of the formula: ``elements`` per token (or per position) of a ``kind`` in ``BYTES``."""

    name: str
    elements: int
    kind: str


def layer_terms(cfg: ModelConfig, precision: str) -> list[Term]:
    """$A_{layer}$ term by term: what one block saves for backward per token (module docstring's table)."""
    h, f, d = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    k_a, k_f = PROJECTION_COPIES[precision]
    return [
        Term("x: block input, fp32 in the norm", h, "fp32"),
        Term("r1: inverse RMS", 1, "fp32"),
        Term("n1: normalised x", h, "stream"),
        Term("a1: attention input, per projection", k_a * h, "compute"),
        Term("q: after RoPE and temperature", heads * d, "compute"),
        Term("k: after RoPE", kv_heads * d, "compute"),
        Term("v", kv_heads * d, "compute"),
        Term("o: attention output", heads * d, "compute"),
        Term("lse: log-sum-exp", heads, "fp32"),
        Term("x': residual after attention, fp32 in the norm", h, "fp32"),
        Term("r2: inverse RMS", 1, "fp32"),
        Term("n2: normalised x'", h, "stream"),
        Term("a2: FFN input, per projection", k_f * h, "compute"),
        Term("g: gate_proj(a2)", f, "compute"),
        Term("u: up_proj(a2)", f, "compute"),
        Term("σ: silu(g)", f, "compute"),
        Term("m: silu(g) * u", f, "compute"),
    ]


def head_terms(cfg: ModelConfig, distill: bool) -> list[Term]:
    """$A_{head}$ per token: the final norm, lm_head's input, the token ids, and plain training's loss."""
    terms = [
        Term("x_L: last block's output, fp32 in the norm", cfg.hidden_size, "fp32"),
        Term("r: inverse RMS", 1, "fp32"),
        Term("n: normalised x_L", cfg.hidden_size, "stream"),
        Term("a: lm_head input", cfg.hidden_size, "compute"),
        Term("token ids", 1, "int64"),
    ]
    if not distill:  # distillation keeps the logits instead: loss_buffer_bytes
        terms += [Term("log p: cross-entropy's log-probabilities", cfg.vocab_size, "fp32"), Term("targets", 1, "int64")]
    return terms


def rope_terms(cfg: ModelConfig) -> list[Term]:
    """$A_{rope}$ per position: the cos / signed sin tables and the temperature, shared by every layer and row."""
    terms = [Term("cos, signed sin", 2 * cfg.head_dim, "stream")]
    if cfg.uses_temperature:
        terms.append(Term("temperature", 1, "stream"))
    return terms


def term_bytes(terms: list[Term], precision: str) -> int:
    return sum(t.elements * BYTES[precision][t.kind] for t in terms)


def activation_bytes(
    cfg: ModelConfig,
    batch: int,
    seq: int,
    precision: str = "autocast",
    checkpointing: bool = False,
    distill: bool = False,
) -> int:
    r"""Bytes saved for backward by one forward pass on ``batch`` x ``seq`` tokens (module docstring).

    $A = BT(L A_{layer} + A_{head}) + T A_{rope}$; with ``checkpointing``, only each block's input
    ($s\,h$ per token) is kept, plus one block's $A_{layer}$ while it is recomputed.
    ``precision``: ``"fp32"``, ``"autocast"`` (DDP) or ``"bf16"`` (FSDP2); ``distill``: the loss is
    the chunked KL, whose logits :func:`loss_buffer_bytes` counts, not the cross-entropy's log-probs.
    """
    if precision not in BYTES:
        raise ValueError(f"precision: must be one of {', '.join(BYTES)}, got {precision!r}")
    layer = term_bytes(layer_terms(cfg, precision), precision)  # A_layer
    layers = cfg.num_hidden_layers * layer
    if checkpointing:  # each block's input in the stream dtype, one block recomputed at a time
        layers = cfg.num_hidden_layers * cfg.hidden_size * BYTES[precision]["stream"] + layer
    head = term_bytes(head_terms(cfg, distill), precision)
    return batch * seq * (layers + head) + seq * term_bytes(rope_terms(cfg), precision)


# ----------------------------------------------------------------------------- activations: the measurement
_VIEWS_AND_CASTS = ("TBackward0", "ToCopyBackward0", "ViewBackward0", "TransposeBackward0", "PermuteBackward0")


def _casts_parameter(t: torch.Tensor, parameters: set[int]) -> bool:
    """Whether ``t`` is a cast of a parameter, or a view of one: autocast's bf16 weight copies."""
    fn = t.grad_fn
    while fn is not None and fn.name() in _VIEWS_AND_CASTS:
        fn = fn.next_functions[0][0]
    leaf = getattr(fn, "variable", None)  # an AccumulateGrad node holds its leaf tensor
    return leaf is not None and leaf.untyped_storage().data_ptr() in parameters


def saved_activation_bytes(model: torch.nn.Module, batch, loss_fn=lm_loss) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``loss_fn(model, batch)`` runs forward.

    ``loss_fn`` defaults to the training loss :func:`minimistral.train.lm_loss` (``batch``: token ids
    ``[b, seq + 1]``); a :class:`minimistral.distill.DistillLoss` measures distillation. Storages are
    deduplicated by address; the parameters, tensors sharing their storage, and casts of parameters
    (autocast's bf16 weight copies, which the planner counts on a row of their own) are not activations
    and are left out. Run it under ``torch.autocast``, or on a bf16 model, to measure the other
    precisions of :func:`activation_bytes`.
    """
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}  # storage address -> bytes

    def pack(t: torch.Tensor) -> torch.Tensor:
        address = t.untyped_storage().data_ptr()
        if address not in parameters and not _casts_parameter(t, parameters):
            saved[address] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_fn(model, batch)  # the graph holds every saved storage until the loss is dropped: no address reused
    return sum(saved.values())


# ----------------------------------------------------------------------------- model states
@dataclass(frozen=True)
class Counts:
    """Exact parameter counts of one model (on the meta device)."""

    total: int  # P: distinct parameters (a tied embedding once)
    matmul: int  # weights of nn.Linear layers: what autocast casts to bf16
    units: dict[str, int]  # FSDP2 units -> parameters

    @property
    def largest_unit(self) -> tuple[str, int]:
        return max(self.units.items(), key=lambda kv: kv[1])


@lru_cache
def counts(cfg: ModelConfig) -> Counts:
    r"""P from :func:`count_parameters`; the matmul weights and the FSDP2 units from :func:`parameter_breakdown`.

    Units: each decoder block ($(\text{attention} + \text{FFN}) / L$ and its two norm gains), the
    embedding table, the head (the final norm and, untied, ``lm_head``). Every matmul weight is in
    attention, FFN, or the $V \times h$ head (tied or not: a tied head multiplies by the embedding).
    """
    groups, h, vocab = parameter_breakdown(cfg), cfg.hidden_size, cfg.vocab_size
    head = vocab * h
    units = {
        "decoder block": (groups["attention"] + groups["ffn"]) // cfg.num_hidden_layers + 2 * h,
        "embedding": vocab * h,
        "head": h + (0 if cfg.tie_word_embeddings else head),
    }
    return Counts(count_parameters(cfg), groups["attention"] + groups["ffn"] + head, units)


# ----------------------------------------------------------------------------- one job, two strategies
def model_config(name: str, argument: str) -> ModelConfig:
    """The config called ``name``; an unknown name is a ValueError naming ``argument`` and the choices."""
    if name not in MODELS:
        raise ValueError(f"{argument}: unknown model {name!r}; choose from {', '.join(MODELS)}")
    return MODELS[name]


@dataclass(frozen=True)
class Job:
    """What is trained (by name, ``MODELS``), on how many devices, with what per-device micro-batch."""

    student: str
    gpus: int
    seq: int = 16384  # the short-context window of the real family
    batch: int = 1  # sequences per device per micro-batch
    teacher: str | None = None  # None: plain training with the cross-entropy
    teacher_dtype: torch.dtype = torch.bfloat16
    chunk_size: int = KL_CHUNK

    def __post_init__(self):
        sizes = {"--gpus": self.gpus, "--seq": self.seq, "--batch": self.batch, "--chunk-size": self.chunk_size}
        for argument, value in sizes.items():
            _positive(argument, value)
        if self.teacher_dtype not in DTYPE_NAMES:
            raise ValueError(
                f"--teacher-dtype: must be one of {', '.join(DTYPE_NAMES.values())}, got {self.teacher_dtype}"
            )
        student = model_config(self.student, "--student")
        if self.teacher is not None and model_config(self.teacher, "--teacher").vocab_size != student.vocab_size:
            raise ValueError(
                f"--teacher: vocab_size {self.teacher_config.vocab_size} differs from the student's "
                f"{student.vocab_size}; logit distillation needs one shared vocabulary"
            )

    @property
    def student_config(self) -> ModelConfig:
        return MODELS[self.student]

    @property
    def teacher_config(self) -> ModelConfig | None:
        return None if self.teacher is None else MODELS[self.teacher]

    @property
    def tokens(self) -> int:
        return self.batch * self.seq


def _positive(argument: str, value) -> None:
    if not (isinstance(value, int) and value >= 1):
        raise ValueError(f"{argument}: must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class DeviceMemory:
    """Bytes on one device, by what holds them (0: not held under this strategy)."""

    strategy: str
    weights: int  # fp32 master weights of the student
    gradients: int  # fp32
    optimizer: int  # AdamW's two fp32 moments
    autocast_copies: int  # DDP: bf16 copies of the matmul weights, saved for backward
    gathered: int  # FSDP2: all-gathered bf16 units, the one in use and the prefetched one
    activations: int  # saved for backward, no checkpointing
    checkpointed: int  # the same with activation checkpointing
    teacher: int  # frozen teacher weights
    loss_buffer: int  # the chunked KL's logits, gradient and work space; or the cross-entropy's gradients

    def total(self, checkpointing: bool) -> int:
        states = self.weights + self.gradients + self.optimizer + self.autocast_copies + self.gathered
        return states + (self.checkpointed if checkpointing else self.activations) + self.teacher + self.loss_buffer


def ddp(job: Job) -> DeviceMemory:
    r"""Every device holds the whole model: $16P$ of model states, $2P_{matmul}$ of autocast copies, $b_T P_T$."""
    student = counts(job.student_config)
    teacher = 0 if job.teacher is None else job.teacher_dtype.itemsize * counts(job.teacher_config).total
    return DeviceMemory(
        "DDP",
        weights=4 * student.total,
        gradients=4 * student.total,
        optimizer=8 * student.total,
        autocast_copies=2 * student.matmul,  # autocast casts each matmul weight once and keeps it for backward
        gathered=0,
        **_activations(job, "DDP"),
        teacher=teacher,
        loss_buffer=loss_buffer_bytes(job),
    )


def fsdp2(job: Job) -> DeviceMemory:
    r"""Sharded over N devices: $16P/N$, $b_T P_T / N$, plus $2 \times$ the largest unit all-gathered in bf16."""
    n, student = job.gpus, counts(job.student_config)
    teacher = 0
    if job.teacher is not None:
        teacher = math.ceil(job.teacher_dtype.itemsize * counts(job.teacher_config).total / n)
    return DeviceMemory(
        "FSDP2",
        weights=math.ceil(4 * student.total / n),
        gradients=math.ceil(4 * student.total / n),
        optimizer=math.ceil(8 * student.total / n),
        autocast_copies=0,  # the gathered weights are bf16 already
        gathered=largest_gathered(job)[1],
        **_activations(job, "FSDP2"),
        teacher=teacher,
        loss_buffer=loss_buffer_bytes(job),
    )


def largest_gathered(job: Job) -> tuple[str, int]:
    """FSDP2's all-gather buffers: (which unit, bytes) for the largest unit of the student (bf16) or the
    teacher (its dtype), times 2: the unit in use and the prefetched one. The two models run in turn."""
    name, params = counts(job.student_config).largest_unit
    candidates = [(f"student {name}, bf16", 2 * 2 * params)]
    if job.teacher is not None:
        name, params = counts(job.teacher_config).largest_unit
        dtype = job.teacher_dtype
        candidates.append((f"teacher {name}, {DTYPE_NAMES[dtype]}", 2 * dtype.itemsize * params))
    return max(candidates, key=lambda c: c[1])


def _activations(job: Job, strategy: str) -> dict[str, int]:
    shape = dict(precision=STRATEGY_PRECISION[strategy], distill=job.teacher is not None)
    cfg, b, t = job.student_config, job.batch, job.seq
    return {
        "activations": activation_bytes(cfg, b, t, checkpointing=False, **shape),
        "checkpointed": activation_bytes(cfg, b, t, checkpointing=True, **shape),
    }


def loss_buffer_bytes(job: Job) -> int:
    r"""What the loss holds beyond the activations at the start of backward, with $N_{tok} = BT$ tokens.

    Plain training, the cross-entropy's backward: the fp32 gradients of the log-probabilities and of
    the logits, $2 \times 4\,N_{tok} V$ (the fp32 log-probabilities are in the activations).

    Distillation (``distill._ChunkedTokenLoss``): the student's and the teacher's logits, both saved
    for backward, and the gradient buffer it fills chunk by chunk, each $b_l N_{tok} V$ with bf16
    logits ($b_l = 2$), and one chunk's work space, $(5 \times 4 + b_l)\,c V$ with
    $c = \min(\text{chunk\_size}, N_{tok})$: five fp32 $[c, V]$ tensors ($\log p_S$, $\log p_T$,
    $p_T$, $\log p_T - \log p_S$ and their product) and the chunk's gradient.
    """
    vocab, tokens = job.student_config.vocab_size, job.tokens
    if job.teacher is None:
        return 2 * 4 * tokens * vocab
    chunk = min(job.chunk_size, tokens)
    return 3 * LOGIT_BYTES * tokens * vocab + (5 * 4 + LOGIT_BYTES) * chunk * vocab


# ----------------------------------------------------------------------------- the report
def verdict(memory: DeviceMemory, gpu_memory: float) -> str:
    """Whether ``memory`` fits in ``gpu_memory`` bytes, and with which activations."""
    full, ckpt = memory.total(False), memory.total(True)
    if full <= gpu_memory:
        return f"fits without activation checkpointing ({_gb(full)} of {gpu_memory / GB:g} GB)"
    if ckpt <= gpu_memory:
        return f"fits only with activation checkpointing ({_gb(ckpt)} of {gpu_memory / GB:g} GB; {_gb(full)} without)"
    return f"does not fit in {gpu_memory / GB:g} GB ({_gb(ckpt)} with activation checkpointing, {_gb(full)} without)"


def _gb(x: float) -> str:
    return f"{x / GB:,.2f}"


def _cell(x: int) -> str:
    return _gb(x) if x else "-"


def memory_table(job: Job, columns: list[DeviceMemory]) -> str:
    """One row per holder, one column per strategy, in GB."""
    teacher = f"teacher weights ({DTYPE_NAMES[job.teacher_dtype]}, frozen)" if job.teacher else "teacher weights"
    loss = f"chunked-KL buffer (chunk {job.chunk_size})" if job.teacher else "cross-entropy gradients (fp32)"
    gathered_unit = largest_gathered(job)[0]
    rows = [
        ("student weights (fp32, 4 B/param)", [m.weights for m in columns]),
        ("gradients (fp32, 4 B/param)", [m.gradients for m in columns]),
        ("AdamW moments (2 x fp32, 8 B/param)", [m.optimizer for m in columns]),
        ("autocast bf16 weight copies (2 B/matmul param)", [m.autocast_copies for m in columns]),
        (f"all-gathered units (2 x the largest: {gathered_unit})", [m.gathered for m in columns]),
        ("activations, no checkpointing", [m.activations for m in columns]),
        ("activations, activation checkpointing", [m.checkpointed for m in columns]),
        (teacher, [m.teacher for m in columns]),
        (loss, [m.loss_buffer for m in columns]),
        ("total, no checkpointing", [m.total(False) for m in columns]),
        ("total, activation checkpointing", [m.total(True) for m in columns]),
    ]
    header = ("GB per device", *(_strategy_title(m.strategy, job.gpus) for m in columns))
    return format_table([header, *((label, *(_cell(v) for v in values)) for label, values in rows)])


def _strategy_title(strategy: str, gpus: int) -> str:
    return f"FSDP2 (/{gpus})" if strategy == "FSDP2" else strategy


def header(job: Job, gpu_memory: float) -> str:
    """The job and every assumption behind the numbers (the module docstring's list, short)."""
    student = f"{job.student} ({counts(job.student_config).total:,} parameters)"
    if job.teacher is None:
        what = f"training {student} with the cross-entropy"
    else:
        teacher = f"{job.teacher} ({counts(job.teacher_config).total:,} parameters, {DTYPE_NAMES[job.teacher_dtype]})"
        what = f"distilling {teacher} into {student}"
    per_token = {s: term_bytes(layer_terms(job.student_config, p), p) for s, p in STRATEGY_PRECISION.items()}
    return "\n".join(
        [
            f"memory plan: {what}",
            f"{job.gpus} devices of {gpu_memory / GB:g} GB (1 GB = 1e9 bytes); per device a micro-batch of "
            f"{job.batch} x {job.seq:,} tokens",
            "assumed: fp32 master weights, gradients and AdamW moments; bf16 autocast; fused (flash) attention,",
            "  never the [T, T] scores; teacher frozen under no_grad (weights only); logits in bf16",
            "  DDP: autocast's bf16 weight copies held for backward; gradient buckets are the gradients",
            "  FSDP2: blocks, embedding and head sharded over every device, all-gathered in bf16, one unit in use",
            "    and one prefetched; the forward runs on bf16 weights",
            "  activation checkpointing: every block's input kept, one block's activations while it is recomputed",
            f"  activations per token per layer: {per_token['DDP']:,} B (DDP: fp32 stream, bf16 matmuls), "
            f"{per_token['FSDP2']:,} B (FSDP2: bf16 weights)",
            "  totals add every row (an upper bound on the peak); no room kept for the CUDA context or fragmentation",
        ]
    )


def report(job: Job, gpu_memory_gb: float) -> str:
    """The header, the table for DDP and FSDP2, and one verdict line per strategy (``minimistral plan``)."""
    if not (isinstance(gpu_memory_gb, int | float) and gpu_memory_gb > 0 and math.isfinite(gpu_memory_gb)):
        raise ValueError(f"--gpu-memory: must be a positive number of GB, got {gpu_memory_gb!r}")
    gpu_memory = gpu_memory_gb * GB
    columns = [ddp(job), fsdp2(job)]
    verdicts = [f"{m.strategy + ':':6s} {verdict(m, gpu_memory)}" for m in columns]
    return "\n".join([header(job, gpu_memory), "", memory_table(job, columns), "", *verdicts])
