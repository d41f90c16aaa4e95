"""Logit distillation (paper section 3.1): the KL losses, their chunked backward, DistillLoss and distill()."""

import copy
import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

import minimistral
from minimistral import ModelConfig
from minimistral.distill import DistillLoss, distill, forward_kl, kd_loss, next_token_loss, reverse_kl
from minimistral.train import TrainConfig, Trainer, Windows, lm_loss

TINY = ModelConfig(
    vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=8, yarn_factor=None, original_max_position_embeddings=None,
    llama_4_scaling_beta=None, max_position_embeddings=128,
)  # fmt: skip
STEPS4 = TrainConfig(steps=4, batch_size=2, lr=1e-2, warmup_steps=1, eval_every=2, ckpt_every=2, log_every=1)


def naive_kl(student, teacher, kind="forward", temperature=1.0, mask=None):
    """The textbook formula on the full [tokens, vocab] tensors, for comparison."""
    log_s = F.log_softmax(student / temperature, dim=-1)
    log_t = F.log_softmax(teacher / temperature, dim=-1)
    log_p, log_q = (log_t, log_s) if kind == "forward" else (log_s, log_t)
    per_token = temperature**2 * (log_p.exp() * (log_p - log_q)).sum(-1)
    if mask is None:
        return per_token.mean()
    return (per_token * mask).sum() / mask.sum()


def logits(*shape, seed=0, dtype=torch.float64, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=dtype)).requires_grad_()


KL = {"forward": forward_kl, "reverse": reverse_kl}


# ----------------------------------------------------------------------------- values
@pytest.mark.parametrize("kind", KL)
def test_identical_logits_give_zero(kind):
    z = logits(2, 5, 11)
    assert KL[kind](z, z.detach().clone()).item() == pytest.approx(0.0, abs=1e-15)


def test_known_distributions_give_the_known_kl():
    p, q = [0.5, 0.3, 0.2], [0.1, 0.6, 0.3]  # teacher, student
    teacher = torch.tensor([[[math.log(x) for x in p]]], dtype=torch.float64)  # [1, 1, 3]
    student = torch.tensor([[[math.log(x) + 1.7 for x in q]]], dtype=torch.float64)  # a shift changes nothing
    kl_pq = sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))
    kl_qp = sum(b * math.log(b / a) for a, b in zip(p, q, strict=True))
    assert forward_kl(student, teacher).item() == pytest.approx(kl_pq, rel=1e-12)
    assert reverse_kl(student, teacher).item() == pytest.approx(kl_qp, rel=1e-12)
    uniform = torch.zeros(1, 1, 2, dtype=torch.float64)
    sharp = torch.tensor([[[math.log(9.0), 0.0]]], dtype=torch.float64)  # softmax = (0.9, 0.1)
    # teacher (0.9, 0.1), student (0.5, 0.5)
    kl_ts = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    kl_st = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert forward_kl(uniform, sharp).item() == pytest.approx(kl_ts, rel=1e-12)
    assert reverse_kl(uniform, sharp).item() == pytest.approx(kl_st, rel=1e-12)


def test_kl_is_positive_and_not_symmetric():
    for seed in range(5):
        s, t = logits(3, 7, 13, seed=seed), logits(3, 7, 13, seed=seed + 100)
        fwd, rev = forward_kl(s, t).item(), reverse_kl(s, t).item()
        assert fwd > 0 and rev > 0 and abs(fwd - rev) > 1e-3


@pytest.mark.parametrize("kind", KL)
@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_temperature_matches_the_naive_formula_with_tau_squared(kind, temperature):
    s, t = logits(2, 6, 17), logits(2, 6, 17, seed=1)
    got = KL[kind](s, t, temperature=temperature)
    assert got.item() == pytest.approx(naive_kl(s, t, kind, temperature).item(), rel=1e-12)
    if temperature != 1.0:  # the tau^2 factor is there: without it the value would be tau^2 times smaller
        unscaled = naive_kl(s, t, kind, temperature) / temperature**2
        assert got.item() != pytest.approx(unscaled.item(), rel=1e-3)


@pytest.mark.parametrize("kind", KL)
def test_masked_tokens_change_neither_loss_nor_gradient(kind):
    s, t = logits(2, 6, 9), logits(2, 6, 9, seed=1)
    mask = torch.rand(2, 6, generator=torch.Generator().manual_seed(3)) > 0.4
    loss = KL[kind](s, t, mask=mask)
    (grad,) = torch.autograd.grad(loss, s)
    assert loss.item() == pytest.approx(naive_kl(s, t, kind, mask=mask.double()).item(), rel=1e-12)
    s2, t2 = s.detach().clone(), t.detach().clone()
    s2[~mask] += 50 * torch.randn_like(s2[~mask])
    t2[~mask] -= 7.0 * torch.randn_like(t2[~mask])
    s2.requires_grad_()
    loss2 = KL[kind](s2, t2, mask=mask)
    (grad2,) = torch.autograd.grad(loss2, s2)
    assert loss2.item() == loss.item()
    assert torch.equal(grad2, grad) and torch.all(grad[~mask] == 0)
    assert KL[kind](s, t, mask=torch.zeros(2, 6, dtype=torch.bool)).item() == 0.0  # nothing to learn from


# ----------------------------------------------------------------------------- chunking
@pytest.mark.parametrize("kind", KL)
@pytest.mark.parametrize("chunk_size", [1, 4, 5, 7, 18, 1000])  # 18 tokens: some divide it, some do not
def test_chunked_loss_and_gradients_equal_naive_autograd(kind, chunk_size):
    s, t = logits(3, 6, 23), logits(3, 6, 23, seed=1)
    mask = torch.arange(18).reshape(3, 6) % 4 != 0
    got = KL[kind](s, t, mask=mask, temperature=1.5, chunk_size=chunk_size)
    want = naive_kl(s, t, kind, 1.5, mask.double())
    g_got = torch.autograd.grad(3.0 * got, (s, t))  # an upstream gradient != 1 must flow through
    g_want = torch.autograd.grad(3.0 * want, (s, t))
    assert got.item() == pytest.approx(want.item(), abs=1e-12)
    for a, b in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_gradient_w_r_t_student_logits_is_tau_times_p_s_minus_p_t():
    r"""Forward KL's classic gradient: $\partial \tau^2 KL / \partial z_S = \tau (p_S - p_T) / N$."""
    s, t, tau = logits(1, 4, 10), logits(1, 4, 10, seed=1), 2.0
    (grad,) = torch.autograd.grad(forward_kl(s, t, temperature=tau, chunk_size=3), s)
    expected = tau * (torch.softmax(s / tau, -1) - torch.softmax(t / tau, -1)) / 4
    torch.testing.assert_close(grad, expected.detach(), atol=1e-12, rtol=0)


class Float32Tensors(TorchDispatchMode):
    """Records the largest fp32 tensor any op produces (forward and backward), and the op names."""

    def __init__(self):
        super().__init__()
        self.largest, self.ops = 0, set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.add(func.__name__)
        for x in pytree.tree_leaves(out):
            if isinstance(x, torch.Tensor) and x.dtype == torch.float32:
                self.largest = max(self.largest, x.numel())
        return out


@pytest.mark.parametrize("kind", KL)
def test_fp32_work_space_stays_within_one_chunk(kind):
    """bf16 logits [64 tokens, 256]: no fp32 tensor beyond chunk_size x vocab in forward or backward."""
    vocab, chunk = 256, 8
    s = logits(2, 32, vocab, dtype=torch.bfloat16)
    t = logits(2, 32, vocab, seed=1, dtype=torch.bfloat16).detach()
    with Float32Tensors() as chunked:
        KL[kind](s, t, chunk_size=chunk).backward()
    assert any("backward" in op for op in chunked.ops)  # the mode saw the backward pass too
    assert chunk * vocab / 2 < chunked.largest <= chunk * vocab
    assert s.grad.dtype == torch.bfloat16 and s.grad.abs().sum() > 0
    with Float32Tensors() as naive:  # the detector does catch the full-size formula
        naive_kl(s.float(), t.float(), kind).backward()
    assert naive.largest >= 64 * vocab


# ----------------------------------------------------------------------------- kd_loss
def test_kd_loss_mixes_kl_and_next_token_loss():
    s, t = logits(2, 5, 12), logits(2, 5, 12, seed=1)
    targets = torch.randint(0, 12, (2, 5), generator=torch.Generator().manual_seed(0))
    kl, ce = forward_kl(s, t).item(), F.cross_entropy(s.flatten(0, 1), targets.flatten()).item()
    assert next_token_loss(s, targets, chunk_size=3).item() == pytest.approx(ce, rel=1e-12)
    for weight, want in [(0.0, kl), (1.0, ce), (0.5, 0.5 * kl + 0.5 * ce), (0.2, 0.8 * kl + 0.2 * ce)]:
        out = kd_loss(s, t, targets, ntp_weight=weight)
        assert out["loss"].item() == pytest.approx(want, rel=1e-12)
        assert out["kl"].item() == pytest.approx(kl, rel=1e-12) and out["ntp"].item() == pytest.approx(ce, rel=1e-12)
    rev = kd_loss(s, t, targets, kind="reverse")["loss"].item()
    assert rev == pytest.approx(reverse_kl(s, t).item(), rel=1e-12)
    (g0,) = torch.autograd.grad(kd_loss(s, t, targets, ntp_weight=0.0)["loss"], s)
    (g_kl,) = torch.autograd.grad(forward_kl(s, t), s)
    assert torch.equal(g0, g_kl)  # the logged next-token term adds no gradient


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="sideways"), "kind"),
        (dict(ntp_weight=1.5), "ntp_weight"),
        (dict(temperature=0.0), "temperature"),
        (dict(chunk_size=0), "chunk_size"),
    ],
)
def test_bad_options_are_clear_errors(kwargs, match):
    s, t = logits(1, 3, 5), logits(1, 3, 5, seed=1)
    with pytest.raises(ValueError, match=match):
        kd_loss(s, t, torch.zeros(1, 3, dtype=torch.long), **kwargs)


def test_bad_shapes_are_clear_errors():
    s = logits(1, 3, 5)
    with pytest.raises(ValueError, match="teacher_logits"):
        forward_kl(s, logits(1, 3, 6))
    with pytest.raises(ValueError, match="mask"):
        reverse_kl(s, logits(1, 3, 5), mask=torch.ones(1, 4))
    with pytest.raises(ValueError, match="targets"):
        kd_loss(s, logits(1, 3, 5), torch.zeros(3, dtype=torch.long))


# ----------------------------------------------------------------------------- DistillLoss and distill()
def tiny(seed=0, cfg=TINY, sharp=1.0):
    torch.manual_seed(seed)
    model = minimistral.Ministral3(cfg)
    with torch.no_grad():
        model.lm_head.weight.mul_(sharp)  # a sharper teacher: its distributions are far from uniform
    return model


def windows(n=16, seq=12, seed=0):
    return Windows(torch.randint(0, TINY.vocab_size, (n, seq + 1), generator=torch.Generator().manual_seed(seed)))


def test_student_equal_to_teacher_has_zero_loss_and_kl_grows_with_perturbation():
    teacher = tiny(sharp=20.0)
    student = copy.deepcopy(teacher).requires_grad_(True)
    loss = DistillLoss(teacher, ntp_weight=0.0)
    batch = windows().batch(torch.arange(4))
    out = loss(student, batch)
    assert out["loss"].item() == 0.0 and out["tokens"] == 4 * 12 and out["ntp"].item() > 0
    assert out["teacher_ce"].item() == pytest.approx(out["ntp"].item(), rel=1e-6)  # same model, same batch
    noise = {k: torch.randn_like(p) for k, p in student.named_parameters()}
    kls = []
    for eps in (1e-3, 1e-2, 1e-1):
        perturbed = copy.deepcopy(teacher)
        with torch.no_grad():
            for k, p in perturbed.named_parameters():
                p.add_(eps * noise[k])
        kls.append(loss(perturbed, batch)["kl"].item())
    assert 0 < kls[0] < kls[1] < kls[2]


def test_teacher_is_frozen_and_unchanged_by_training(tmp_path):
    teacher = tiny(sharp=20.0)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = tiny(seed=1, cfg=TINY.replace(hidden_size=16, num_hidden_layers=1))  # a smaller student
    cfg = dataclasses.replace(STEPS4, steps=1)
    trainer = Trainer(student, cfg, windows(), tmp_path, loss_fn=DistillLoss(teacher), device="cpu")
    student_before = [p.clone() for p in student.parameters()]
    trainer.fit()
    assert not teacher.training and all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert any(not torch.equal(a, b) for a, b in zip(student_before, student.parameters(), strict=True))


def test_vocab_mismatch_and_shared_weights_are_clear_errors(tmp_path):
    teacher = tiny()
    other = tiny(cfg=TINY.replace(vocab_size=80))
    with pytest.raises(ValueError, match="vocab_size 64 differs from the student's 80"):
        DistillLoss(teacher)(other, windows().batch(torch.arange(2)))
    with pytest.raises(ValueError, match="vocab_size"):
        distill(other, teacher, windows(), tmp_path, STEPS4, device="cpu")
    with pytest.raises(ValueError, match="shares parameters"):
        distill(teacher, teacher, windows(), tmp_path, STEPS4, device="cpu")
    with pytest.raises(ValueError, match="batch"):
        DistillLoss(teacher)(tiny(), torch.zeros(2, 1, dtype=torch.long))


def _kl_on(teacher, student, data):
    with torch.no_grad():
        return DistillLoss(teacher)(student, data.batch(torch.arange(len(data))))["kl"].item()


def test_distill_lowers_the_kl_and_writes_a_standard_checkpoint(tmp_path):
    teacher, student, held_out = tiny(sharp=20.0), tiny(seed=1), windows(8, seed=1)
    start = _kl_on(teacher, student, held_out)
    path = distill(student, teacher, windows(), tmp_path, STEPS4, val_data=held_out, device="cpu")
    assert path == tmp_path / "checkpoint"
    assert _kl_on(teacher, student, held_out) < 0.95 * start  # measured: 1.80 -> 1.65
    loaded = minimistral.from_pretrained(path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in student.state_dict().items())
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in metrics if "loss" in m]
    assert [m["step"] for m in train] == [1, 2, 3, 4] and all(m["loss"] == m["kl"] and m["ntp"] > 0 for m in train)
    vals = [m["val_loss"] for m in metrics if "val_loss" in m]
    assert [m["step"] for m in metrics if "val_loss" in m] == [2, 4] and vals[-1] < vals[0]
    assert vals[-1] == pytest.approx(_kl_on(teacher, student, held_out), rel=1e-5)  # validation is the KD loss


def test_distill_options_and_next_token_validation(tmp_path):
    teacher, student, held_out = tiny(sharp=20.0), tiny(seed=1), windows(8, seed=1)
    loss = DistillLoss(teacher, kind="reverse", ntp_weight=0.5, temperature=2.0)
    distill(student, teacher, windows(), tmp_path, STEPS4, held_out, loss=loss, val_loss_fn=lm_loss, device="cpu")
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(m["loss"] == pytest.approx(0.5 * m["kl"] + 0.5 * m["ntp"], rel=1e-5) for m in metrics if "loss" in m)
    with torch.no_grad():
        ntp = lm_loss(student, held_out.batch(torch.arange(8)))["loss"].item()
    assert metrics[-1]["val_loss"] == pytest.approx(ntp, rel=1e-5)
    with pytest.raises(ValueError, match="loss: its teacher"):
        distill(student, teacher, windows(), tmp_path / "x", STEPS4, loss=DistillLoss(tiny()), device="cpu")


class InterruptedDistillLoss(DistillLoss):
    """DistillLoss that raises KeyboardInterrupt (as Ctrl-C would) after ``stop`` training micro-batches."""

    def __init__(self, teacher, stop: int):
        super().__init__(teacher)
        self.stop, self.calls = stop, 0

    def __call__(self, model, batch):
        self.calls += model.training  # count training micro-batches, not validation ones
        if self.calls > self.stop:
            raise KeyboardInterrupt
        return super().__call__(model, batch)


def test_interrupted_then_resumed_distillation_is_bitwise_exact(tmp_path):
    teacher, data, val = tiny(sharp=20.0), windows(), windows(4, seed=1)
    straight = tiny(seed=1)
    distill(straight, teacher, data, tmp_path / "a", STEPS4, val_data=val, device="cpu")
    interrupted = InterruptedDistillLoss(teacher, stop=2)
    with pytest.raises(KeyboardInterrupt):
        distill(tiny(seed=1), teacher, data, tmp_path / "b", STEPS4, val_data=val, loss=interrupted, device="cpu")
    state = json.loads((tmp_path / "b" / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 2
    resumed = tiny(seed=2)  # a new process: different init, restored from the checkpoint
    distill(resumed, teacher, data, tmp_path / "b", STEPS4, val_data=val, device="cpu")
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [[json.loads(line)["step"] for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
             for d in ("a", "b")]  # fmt: skip
    assert steps[0] == steps[1]
