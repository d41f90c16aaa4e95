"""The memory planner: exact model states, the activation formula against autograd's saved tensors, the loss
buffers against the live bytes of the real loss code, and ``minimistral plan``."""

import inspect
import weakref

import pytest
import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.checkpoint import checkpoint

from minimistral import ModelConfig
from minimistral.arch.model import Ministral3
from minimistral.cli import main
from minimistral.distill import DistillLoss, forward_kl
from minimistral.evaluate.loss import next_token_nll
from minimistral.plan import (
    KL_CHUNK,
    DeviceMemory,
    Job,
    activation_bytes,
    ddp,
    fsdp2,
    layer_terms,
    loss_buffer_bytes,
    saved_activation_bytes,
    term_bytes,
    verdict,
)

P_8B, P_14B = 8_489_553_920, 13_506_073_600

# (config, batch, seq): small random models of three shapes
SMALL = ModelConfig(
    vocab_size=256, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16,
)  # fmt: skip
TIED_PLAIN_ROPE = ModelConfig(
    vocab_size=128, hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=6,
    num_key_value_heads=3, head_dim=8, tie_word_embeddings=True, yarn_factor=None,
    original_max_position_embeddings=None, llama_4_scaling_beta=None, max_position_embeddings=128,
)  # fmt: skip
WIDE_HEADS = ModelConfig(
    vocab_size=512, hidden_size=40, intermediate_size=72, num_hidden_layers=1, num_attention_heads=8,
    num_key_value_heads=2, head_dim=12,
)  # fmt: skip
SHAPES = {"small": (SMALL, 2, 32), "tied-plain-rope": (TIED_PLAIN_ROPE, 1, 48), "wide-heads": (WIDE_HEADS, 3, 20)}


def model_and_batch(cfg, batch, seq, precision):
    torch.manual_seed(0)
    model = Ministral3(cfg)
    if precision == "bf16":
        model = model.to(torch.bfloat16)  # FSDP2's all-gathered weights
    return model, torch.randint(0, cfg.vocab_size, (batch, seq + 1))


def measured(model, batch, precision, **kw):
    """Saved bytes of the forward pass, run as the engine runs it in ``precision`` (CPU autocast for bf16)."""
    if precision == "fp32":
        return saved_activation_bytes(model, batch, **kw)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return saved_activation_bytes(model, batch, **kw)


# ----------------------------------------------------------------------------- model states
def test_model_states_are_exact_arithmetic_on_the_parameter_count():
    job = Job("ministral-3-8b", gpus=8, teacher="ministral-3-14b")
    d, f = ddp(job), fsdp2(job)
    assert (d.weights, d.gradients, d.optimizer) == (4 * P_8B, 4 * P_8B, 8 * P_8B)
    assert (f.weights, f.gradients, f.optimizer) == (4 * P_8B // 8, 4 * P_8B // 8, 8 * P_8B // 8)
    assert (d.teacher, f.teacher) == (2 * P_14B, 2 * P_14B // 8)
    # autocast's copies: every matmul weight, i.e. all but the input embedding (untied) and the norm gains
    norms = (2 * 34 + 1) * 4096
    assert d.autocast_copies == 2 * (P_8B - 131072 * 4096 - norms) and f.autocast_copies == 0
    # FSDP2 gathers the largest unit twice: the 14B teacher's head (final norm + lm_head), in bf16
    assert f.gathered == 2 * 2 * (131072 * 5120 + 5120) and d.gathered == 0
    fp32_teacher = fsdp2(Job("ministral-3-8b", gpus=8, teacher="ministral-3-14b", teacher_dtype=torch.float32))
    assert fp32_teacher.teacher == 4 * P_14B // 8
    assert ddp(Job("ministral-3-8b", gpus=8)).teacher == 0


# ----------------------------------------------------------------------------- activations
@pytest.mark.parametrize(
    "shape, precision",
    [("small", "fp32"), ("tied-plain-rope", "fp32"), ("wide-heads", "fp32"), ("small", "autocast"), ("small", "bf16")],
)
def test_activation_formula_matches_the_saved_tensors(shape, precision):
    cfg, b, seq = SHAPES[shape]
    model, batch = model_and_batch(cfg, b, seq, precision)
    ratio = measured(model, batch, precision) / activation_bytes(cfg, b, seq, precision)
    assert ratio == pytest.approx(1.0, rel=0.2)


def test_checkpointing_keeps_the_block_inputs():
    """Reentrant checkpointing saves each block's input; the recomputed block's share lives in backward."""
    cfg, b, seq = SHAPES["small"]
    model, batch = model_and_batch(cfg, b, seq, "fp32")
    for block in model.model.layers:
        block.forward = lambda *args, forward=block.forward: checkpoint(forward, *args, use_reentrant=True)
    recomputed = b * seq * term_bytes(layer_terms(cfg, "fp32"), "fp32")
    formula = activation_bytes(cfg, b, seq, "fp32", checkpointing=True) - recomputed
    assert measured(model, batch, "fp32") / formula == pytest.approx(1.0, rel=0.2)


def test_distillation_saves_both_logits_instead_of_the_log_probabilities():
    cfg, b, seq = SHAPES["small"]
    student, batch = model_and_batch(cfg, b, seq, "fp32")
    teacher = Ministral3(cfg.replace(num_hidden_layers=3))
    saved = measured(student, batch, "fp32", loss_fn=DistillLoss(teacher))
    logits = 2 * b * seq * cfg.vocab_size * 4  # student's and teacher's, fp32 here
    assert saved / (activation_bytes(cfg, b, seq, "fp32", distill=True) + logits) == pytest.approx(1.0, rel=0.2)


# ----------------------------------------------------------------------------- the loss buffers
class LiveBytes(TorchDispatchMode):
    """The peak of the bytes held by storages that ops produce (or view) while the mode is on."""

    def __init__(self):
        super().__init__()
        self.live, self.peak = {}, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for x in pytree.tree_leaves(out):
            if isinstance(x, torch.Tensor) and x.untyped_storage().data_ptr() not in self.live:
                storage = x.untyped_storage()
                self.live[storage.data_ptr()] = storage.nbytes()
                weakref.finalize(storage, self.live.pop, storage.data_ptr(), None)
        self.peak = max(self.peak, sum(self.live.values()))
        return out


def test_kl_buffer_is_what_the_chunked_kl_holds():
    """bf16 logits [2, 32, 4096], chunks of 16: both logits, their gradient and one chunk's fp32 work space."""
    job = Job("tiny-8b", gpus=1, batch=2, seq=32, teacher="tiny-14b", chunk_size=16)
    student = torch.randn(2, 32, 4096, dtype=torch.bfloat16, requires_grad=True)
    teacher = torch.randn(2, 32, 4096, dtype=torch.bfloat16)
    with LiveBytes() as live:
        forward_kl(student, teacher, chunk_size=16).backward()
    assert live.peak / loss_buffer_bytes(job) == pytest.approx(1.0, rel=0.05)


def test_cross_entropy_buffer_is_its_two_fp32_gradients():
    job = Job("tiny-8b", gpus=1, batch=2, seq=32)
    logits = torch.randn(2, 32, 4096, dtype=torch.bfloat16, requires_grad=True)
    targets = torch.randint(0, 4096, (2, 32))
    with LiveBytes() as live:
        next_token_nll(logits, targets).mean().backward()
    log_probs = 4 * 2 * 32 * 4096  # saved: counted in the activations
    assert (live.peak - log_probs) / loss_buffer_bytes(job) == pytest.approx(1.0, rel=0.05)


def test_kl_chunk_default_is_the_distillation_default():
    assert inspect.signature(DistillLoss).parameters["chunk_size"].default == KL_CHUNK
    assert inspect.signature(forward_kl).parameters["chunk_size"].default == KL_CHUNK


# ----------------------------------------------------------------------------- verdicts and the CLI
def test_verdict_names_the_activation_choice():
    memory = DeviceMemory("DDP", 10, 0, 0, 0, 0, activations=50, checkpointed=5, teacher=0, loss_buffer=0)
    assert verdict(memory, 100).startswith("fits without activation checkpointing")
    assert verdict(memory, 20).startswith("fits only with activation checkpointing")
    assert verdict(memory, 10).startswith("does not fit")


def test_cli_plan_prints_both_strategies_and_a_verdict(capsys):
    argv = ["plan", "--teacher", "ministral-3-14b", "--student", "ministral-3-8b", "--gpus", "8", "--gpu-memory", "80"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "DDP" in out and "FSDP2 (/8)" in out and "chunked-KL buffer (chunk 1024)" in out
    assert f"{4 * P_8B / 1e9:.2f}" in out and f"{4 * P_8B / 8e9:.2f}" in out  # student weights, both columns
    verdicts = [line for line in out.splitlines() if line.startswith(("DDP:", "FSDP2:"))]
    assert verdicts[0].startswith("DDP:   does not fit in 80 GB")  # 16 B/param of the 8B alone is 136 GB
    assert verdicts[1].startswith("FSDP2: fits only with activation checkpointing")


@pytest.mark.parametrize("argument", ["--student", "--teacher"])
def test_cli_unknown_model_is_a_one_line_error(argument, capsys):
    names = {"--student": "ministral-3-8b", "--teacher": "ministral-3-14b", argument: "ministral-9b"}
    argv = ["plan", "--gpus", "8", "--gpu-memory", "80", *(x for kv in names.items() for x in kv)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and argument in err and "'ministral-9b'" in err and "tiny-3b" in err


def test_a_teacher_with_another_vocabulary_is_refused():
    with pytest.raises(ValueError, match="--teacher: vocab_size 131072"):
        Job("tiny-8b", gpus=1, teacher="ministral-3-14b")
