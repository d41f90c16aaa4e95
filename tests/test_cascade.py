"""Cascade Distillation end to end at a micro scale: stages, shapes, data slices, resume, claims, tables."""

import json

import pytest
import torch
import transformers

import minimistral.distill
from minimistral.arch.config import TINY_CONFIGS
from minimistral.arch.hub import from_pretrained, save_pretrained
from minimistral.arch.model import Ministral3
from minimistral.arch.params import count_parameters
from minimistral.cascade.claims import tokens_to_match
from minimistral.cascade.pipeline import (
    CHILDREN,
    STAGES,
    Cascade,
    Stage,
    calibration,
    child_slice,
    prune_to,
    stage_named,
    training_curve,
)
from minimistral.scales import CascadeScale

MICRO = CascadeScale(
    short_steps=2, long_steps=1, batch_size=4, warmup_steps=1, calib_windows=4, eval_every=1, eval_batches=1,
    ckpt_every=1,
)  # fmt: skip


@pytest.fixture(scope="module")
def parent_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("parent")
    torch.manual_seed(0)
    save_pretrained(Ministral3(TINY_CONFIGS["tiny-24b"]), d)
    return d


@pytest.fixture(scope="module")
def cascade(parent_dir, tmp_path_factory):
    c = Cascade(parent_dir, tmp_path_factory.mktemp("cascade"), MICRO, device="cpu")
    c.run()
    return c


def _rope(cfg):
    keys = ("rope_theta", "yarn_factor", "linear_factor", "original_max_position_embeddings")
    return {k: getattr(cfg, k) for k in (*keys, "llama_4_scaling_beta", "max_position_embeddings", "sliding_window")}


def test_every_stage_has_the_child_shape_and_base_is_exactly_the_child_config(cascade):
    parent_rope = _rope(TINY_CONFIGS["tiny-24b"])
    for stage in STAGES:
        cfg = from_pretrained(cascade.checkpoint(stage)).config
        target = TINY_CONFIGS[stage.child]
        assert count_parameters(cfg) == count_parameters(target), stage
        assert cfg.tie_word_embeddings == target.tie_word_embeddings
        # Init and Short keep the parent's positions; the long stage switches on YaRN x4 + temperature
        assert _rope(cfg) == (_rope(target) if stage.kind == "long" else parent_rope), stage


def test_base_checkpoint_loads_in_transformers_with_the_same_logits(cascade):
    ckpt = cascade.checkpoint(Stage("tiny-3b", "long"))  # tied, YaRN, temperature
    ours = from_pretrained(ckpt).eval()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(ckpt).float().eval()
    ids = torch.randint(0, 4096, (1, 600))  # past the 256-token original window
    with torch.no_grad():
        assert torch.allclose(ours(ids), theirs(ids).logits, atol=1e-4)


def test_each_stage_trains_on_its_own_slice_of_one_stream(cascade):
    data = cascade.data
    for kind, stream in (("short", data.short), ("long", data.long)):
        slices = [child_slice(c, kind, MICRO, data) for c in CHILDREN]
        n = slices[0].shape[0]
        for k, s in enumerate(slices):  # consecutive, disjoint: the stream is traversed once
            assert torch.equal(s, stream[k * n : (k + 1) * n])
    with pytest.raises(ValueError, match="stream has"):
        child_slice("tiny-3b", "short", CascadeScale(short_steps=10**6, long_steps=1), data)


def test_each_child_is_pruned_from_the_previous_short_checkpoint(cascade):
    # tiny-8b Init is exactly tiny-14b Short pruned with tiny-8b's calibration windows (not the parent, not Base)
    calib = calibration("tiny-8b", MICRO, cascade.data)
    again = prune_to(from_pretrained(cascade.checkpoint(Stage("tiny-14b", "short"))), "tiny-8b", calib).state_dict()
    init = from_pretrained(cascade.checkpoint(Stage("tiny-8b", "init"))).state_dict()
    assert all(torch.equal(again[k], init[k]) for k in init)
    with pytest.raises(ValueError, match="unknown stage"):
        stage_named("tiny-5b-short")


def test_figure2_curve_runs_through_every_training_stage_in_order(cascade):
    curve = list(training_curve(cascade.root))
    stages = [r["stage"] for r in curve]
    assert list(dict.fromkeys(stages)) == [s.name for s in STAGES if s.kind != "init"]
    tokens = [r["tokens"] for r in curve]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
    assert all(r["ntp"] > 0 and r["teacher_ce"] > 0 for r in curve)


def test_interrupted_cascade_resumes_to_bitwise_the_same_children(cascade, parent_dir, tmp_path, monkeypatch):
    original = minimistral.distill.DistillLoss.__call__
    calls = {"n": 0}

    def interrupting(self, model, batch):
        calls["n"] += model.training
        if calls["n"] > 4:  # tiny-14b: 2 short + 1 long step; then one step of tiny-8b Short (validation: lm_loss)
            raise KeyboardInterrupt
        return original(self, model, batch)

    monkeypatch.setattr(minimistral.distill.DistillLoss, "__call__", interrupting)
    first = Cascade(parent_dir, tmp_path, MICRO, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        first.run()
    assert not first.is_done(Stage("tiny-8b", "short")) and first.is_done(Stage("tiny-8b", "init"))
    monkeypatch.setattr(minimistral.distill.DistillLoss, "__call__", original)
    resumed = Cascade(parent_dir, tmp_path, MICRO, device="cpu")
    resumed.run()
    for stage in STAGES:
        a = from_pretrained(cascade.checkpoint(stage)).state_dict()
        b = from_pretrained(resumed.checkpoint(stage)).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), stage
    # restarting from a stage deletes it and everything after it, nothing before
    resumed.restart_from("tiny-8b-long")
    kept = {"tiny-14b-init", "tiny-14b-short", "tiny-14b-long", "tiny-8b-init", "tiny-8b-short"}
    assert [resumed.is_done(s) for s in STAGES] == [s.name in kept for s in STAGES]
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert [s["stage"] for s in plan["stages"]] == [s.name for s in STAGES]


def test_tokens_to_match_interpolates_between_validations():
    curve = [(100, 5.0), (200, 4.0), (300, 3.0)]
    assert tokens_to_match(curve, 3.5) == pytest.approx(250)
    assert tokens_to_match(curve, 6.0) == 100
    assert tokens_to_match(curve, 2.0) is None


def test_claim_runs_see_exactly_the_budget_and_score_in_one_table(cascade):
    from minimistral.cascade.claims import RUNS, budget_tokens, run_claims
    from minimistral.cascade.report import Evaluator, claims_table, format_summary

    runs = run_claims(cascade)
    budget = budget_tokens(cascade)
    assert budget == MICRO.short_steps * MICRO.batch_size * 256
    for name, ckpt in runs.items():
        state = json.loads((ckpt / "trainer_state.json").read_text())
        assert state["tokens"] == budget * (4 if name == "scratch_4x" else 1), name
    rows = claims_table(cascade, Evaluator(cascade, per_source=1))
    assert [r["model"] for r in rows] == ["cascade", *RUNS]
    text = format_summary(
        {"cascade_table3": [{"evaluation": "x", "tiny-24b": 1.0}], "cascade_stages": [], "cascade_claims": rows}
    )
    assert "Claims at equal tokens" in text and "scratch_4x" in text


def test_teacher_ablation_reruns_the_short_stage_from_another_teacher(cascade, parent_dir, tmp_path_factory):
    from minimistral.cascade.teachers import BIGGER, run_teacher_ablation, taught

    own = cascade.checkpoint(Stage("tiny-3b", "short"))
    same = taught(cascade, "parent-again", parent_dir)  # the same Init, windows, steps, order and teacher
    assert torch.equal(from_pretrained(same).lm_head.weight, from_pretrained(own).lm_head.weight)
    bigger = tmp_path_factory.mktemp("bigger")
    torch.manual_seed(1)
    save_pretrained(Ministral3(BIGGER), bigger)
    rows = run_teacher_ablation(cascade, {"bigger": bigger}, "ci")
    assert not torch.equal(from_pretrained(cascade.root / "teachers" / "bigger" / "checkpoint").lm_head.weight,
                           from_pretrained(own).lm_head.weight)  # fmt: skip
    assert rows[0] == {"evaluation": "teacher parameters", "parent": count_parameters(TINY_CONFIGS["tiny-24b"]),
                       "bigger": count_parameters(BIGGER)}  # fmt: skip
    assert {"Math exact match, greedy (%)", "Bits per byte, math (lower is better)"} <= {r["evaluation"] for r in rows}
    with pytest.raises(ValueError, match="teacher 'missing': no checkpoint"):
        run_teacher_ablation(cascade, {"missing": bigger / "nothing"}, "ci")
