"""The cascade report's small readers: per-stage EMA, prune jumps, stage tokens, seed gaps and ties (notebook 04)."""

import pytest

from minimistral.cascade.report import (
    compare_models,
    ema,
    prune_jumps,
    seed_gap,
    stage_ema,
    stage_tokens,
    table3_noise,
    upstream_tokens,
)
from minimistral.scales import ReportScale, get_scale


def _curve():
    rows = []
    for stage, ntp, teacher in (
        ("tiny-14b-short", [4.0, 3.0], [3.5, 3.0]),
        ("tiny-14b-long", [9.0], [9.0]),
        ("tiny-8b-short", [5.0, 3.2], [3.0, 3.1]),
        ("tiny-3b-short", [8.0, 4.0], [3.4, 3.3]),
    ):
        for n, t in zip(ntp, teacher, strict=True):
            rows.append({"stage": stage, "ntp": str(n), "teacher_ce": str(t)})  # as read_csv gives them
    return rows


def test_stage_ema_restarts_at_every_stage():
    curve = _curve()
    out = stage_ema(curve)
    assert list(out) == ["tiny-14b-short", "tiny-14b-long", "tiny-8b-short", "tiny-3b-short"]
    assert out["tiny-8b-short"] == ema([5.0, 3.2])  # starts at the stage's own first step
    assert out["tiny-8b-short"][0] == 5.0


def test_prune_jumps_against_the_previous_short_stage_and_the_teacher():
    j = {r["child"]: r for r in prune_jumps(_curve())}
    assert j["tiny-14b"]["before"] == 3.5 and j["tiny-14b"]["jump"] == pytest.approx(0.5)  # the parent = teacher
    assert j["tiny-14b"]["jump_vs_teacher"] == pytest.approx(0.5)
    # tiny-8b: pruned from tiny-14b Short (last step 3.0, teacher 3.0), never from Base
    assert j["tiny-8b"]["before"] == 3.0 and j["tiny-8b"]["jump"] == pytest.approx(2.0)
    assert j["tiny-8b"]["gap_first"] == pytest.approx(2.0) and j["tiny-8b"]["jump_vs_teacher"] == pytest.approx(2.0)
    # tiny-3b: the previous Short ended 0.1 above its teacher; the first step is 4.6 above its own
    assert j["tiny-3b"]["jump"] == pytest.approx(4.8)
    assert j["tiny-3b"]["jump_vs_teacher"] == pytest.approx(4.6 - 0.1)


def test_stage_tokens_and_upstream_tokens_follow_the_scale():
    s = get_scale("default").cascade
    assert stage_tokens("short", s) == s.short_steps * s.batch_size * 256
    assert stage_tokens("long", s) == s.long_steps * s.long_batch_size * 1024
    rows = upstream_tokens(s, parent_tokens=1000)
    assert [r["stage"] for r in rows if r["ancestor"]] == ["tiny-24b pretraining", "tiny-14b Short", "tiny-8b Short"]
    assert sum(r["tokens"] for r in rows if r["ancestor"]) == 1000 + 2 * stage_tokens("short", s)


def _claims(cascade, kd):
    rows = []
    for name, losses in (("cascade", cascade), ("kd_ntp", kd)):
        rows += [{"model": name + (f"_seed{i}" if i else ""), "overall_loss": str(v)} for i, v in enumerate(losses)]
    return [*rows, {"model": "scratch", "overall_loss": "9"}]


def test_seed_gap_pairs_the_seeds():
    g = seed_gap(_claims([4.0, 4.1, 4.2], [4.3, 4.3, 4.4]))
    assert g["seeds"] == 3 and g["diffs"] == pytest.approx([0.3, 0.2, 0.2])
    assert g["mean"] == pytest.approx(0.7 / 3) and g["separated"] is True
    assert seed_gap(_claims([4.0, 4.3], [4.2, 4.35]))["separated"] is False  # the ranges overlap
    one = seed_gap(_claims([4.0], [4.1]))
    assert one["seeds"] == 1 and one["std"] is None and one["separated"] is None


def test_ties_within_the_noise_and_the_ordering_outside_it():
    table3 = [
        {"evaluation": "Bits per byte, milton (lower is better)", "a": 2.00, "b": 2.01},
        {"evaluation": "Cloze 4-way, milton (%)", "a": 52.0, "b": 50.0},
        {"evaluation": "Math solution log-prob per token (nats)", "a": -1.5, "b": -2.0},
        {"evaluation": "Math solution token accuracy, teacher-forced (%)", "a": 50.0, "b": 40.0},
    ]
    claims = [
        {"model": "cascade", "milton_bpb": "2.40", "math_loss": "2.00"},
        {"model": "cascade_seed1", "milton_bpb": "2.42", "math_loss": "2.02"},
    ]
    noise = table3_noise(table3, "a", "b", claims, ReportScale(per_source=1, n_math=10, n_cloze=100))
    assert noise["Cloze 4-way, milton (%)"] == pytest.approx(200 * ((0.52 * 0.48 + 0.5 * 0.5) / 100) ** 0.5)
    assert noise["Bits per byte, milton (lower is better)"] == pytest.approx(2 * 0.02 / 2**0.5)
    verdicts = {r["evaluation"]: r["verdict"] for r in compare_models(table3, "a", "b", noise)}
    assert verdicts["Bits per byte, milton (lower is better)"] == "tie"  # 0.01 < 2 x 0.0141
    assert verdicts["Cloze 4-way, milton (%)"] == "tie"  # two items of 100
    assert verdicts["Math solution log-prob per token (nats)"] == "a ahead"  # higher log-prob is better
    assert verdicts["Math solution token accuracy, teacher-forced (%)"] == "?"  # no yardstick for a share of tokens
    one_seed = table3_noise(table3, "a", "b", claims[:1], ReportScale(per_source=1, n_math=10, n_cloze=100))
    assert one_seed["Bits per byte, milton (lower is better)"] is None
    assert compare_models(table3, "a", "b", one_seed)[0]["verdict"] == "?"
