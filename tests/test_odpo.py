"""odpo_loss (paper §4's online DPO): closed forms, its symmetry, where it stops pulling, fp64 gradients."""

import math

import pytest
import torch
import torch.nn.functional as F

from minimistral.posttrain import odpo_loss


def _f64(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_with_a_hard_label_it_is_the_dpo_loss():
    pa, pb = _f64(-3.0, -5.0).requires_grad_(), _f64(-4.0, -2.0).requires_grad_()
    ra, rb = _f64(-3.5, -4.0), _f64(-3.0, -2.5)
    loss = odpo_loss(pa, pb, ra, rb, _f64(1.0, 1.0), beta=0.5)
    delta = [(-3 + 3.5) - (-4 + 3), (-5 + 4) - (-2 + 2.5)]  # 1.5 and -1.5
    want = sum(math.log1p(math.exp(-0.5 * d)) for d in delta) / 2  # -log sigmoid(beta delta)
    assert loss.item() == pytest.approx(want)
    loss.backward()  # dL/d delta = beta (sigmoid(beta delta) - 1), over n = 2 pairs
    grad = [0.5 * (1 / (1 + math.exp(-0.5 * d)) - 1) / 2 for d in delta]
    assert torch.allclose(pa.grad, _f64(*grad)) and torch.allclose(pb.grad, -_f64(*grad))


def test_both_orders_count_and_the_loss_stops_where_the_policy_agrees_with_the_judge():
    g = torch.Generator().manual_seed(0)
    pa, pb, ra, rb = (torch.randn(4, dtype=torch.float64, generator=g) for _ in range(4))
    p = torch.rand(4, dtype=torch.float64, generator=g)
    assert torch.allclose(odpo_loss(pa, pb, ra, rb, p, 0.3), odpo_loss(pb, pa, rb, ra, 1 - p, 0.3))
    assert odpo_loss(_f64(-1.0), _f64(-2.0), _f64(-1.0), _f64(-2.0), _f64(0.5), 1.0).item() == pytest.approx(
        math.log(2)
    )  # no preference either way and no move from the reference: log 2
    beta, prob = 0.1, 0.8
    delta = math.log(prob / (1 - prob)) / beta  # sigmoid(beta delta) = p: the minimum
    a = _f64(delta).requires_grad_()
    odpo_loss(a, _f64(0.0), _f64(0.0), _f64(0.0), _f64(prob), beta).backward()
    assert abs(a.grad.item()) < 1e-12


def test_gradients_fp64_and_none_into_the_reference_or_the_judge():
    g = torch.Generator().manual_seed(1)
    pa, pb, ra, rb = (torch.randn(5, dtype=torch.float64, generator=g).requires_grad_() for _ in range(4))
    p = torch.rand(5, dtype=torch.float64, generator=g).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: odpo_loss(x, y, ra, rb, p, 0.7), (pa, pb))
    odpo_loss(pa, pb, ra, rb, p, 0.7).backward()
    assert ra.grad is None and rb.grad is None and p.grad is None
    want = -(p * F.logsigmoid(0.7 * ((pa - ra) - (pb - rb)))).mean()  # the a-wins half alone is smaller
    assert odpo_loss(pa, pb, ra, rb, p, 0.7) > want


def test_bad_inputs_are_one_line_errors():
    one = _f64(0.0)
    with pytest.raises(ValueError, match="shapes"):
        odpo_loss(_f64(0.0, 1.0), one, one, one, one, 0.1)
    with pytest.raises(ValueError, match="beta"):
        odpo_loss(one, one, one, one, _f64(0.5), 0.0)
    with pytest.raises(ValueError, match="prob_a"):
        odpo_loss(one, one, one, one, _f64(1.5), 0.1)
