"""The driver's bookkeeping: --from deletes exactly the later steps, steps run once per checkpoint, step times."""

import pytest
import torch

import minimistral.reproduce as rp
from minimistral.arch.config import TINY_CONFIGS
from minimistral.arch.hub import save_pretrained
from minimistral.arch.model import Ministral3
from minimistral.cascade.pipeline import STAGES

EXTRA = ("vision-parent", "claims", "longctx", "vision-study", "teacher-sft", *rp.POST_STEPS, "posttrain-study",
         *rp.INSTRUCT_STEPS, "pwrm", *rp.ODPO_STEPS, "odpo-study")  # fmt: skip


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A fake run tree: parent, every child's step, the parent's vision, claims, longctx and vision-study."""
    parent, root = tmp_path / "parent-x", tmp_path / "cascade-x"
    monkeypatch.setattr(rp, "parent_dir", lambda scale: parent)
    monkeypatch.setattr(rp, "cascade_dir", lambda scale: root)
    for d in [parent / "checkpoint", *(root / s for s in rp.CHILD_STEPS), *(root / n for n in EXTRA)]:
        d.mkdir(parents=True)
    (parent / "prune-study.json").write_text("{}")
    return parent, root


def _left(parent, root):
    names = [s for s in rp.CHILD_STEPS if (root / s).exists()]
    extra = [n for n in EXTRA if (root / n).exists()]
    return parent.exists(), (parent / "prune-study.json").exists(), names, extra


def test_every_stage_of_the_cascade_is_a_step_in_order():
    stages = [s.name for s in STAGES]
    assert [s for s in rp.CHILD_STEPS if not s.endswith("-vision")] == stages
    assert rp.STEPS.index("vision-parent") < rp.STEPS.index(stages[0])  # children copy the parent's ViT


def test_from_a_stage_deletes_it_and_every_later_step(tree):
    parent, root = tree
    rp.forget("x", "tiny-8b-long")
    kept = list(rp.CHILD_STEPS[: rp.CHILD_STEPS.index("tiny-8b-long")])
    assert _left(parent, root) == (True, True, kept, ["vision-parent"])


def test_from_longctx_keeps_the_cascade_and_the_claims(tree):
    parent, root = tree
    rp.forget("x", "longctx")
    assert _left(parent, root) == (True, True, list(rp.CHILD_STEPS), ["vision-parent", "claims"])


def test_from_pretrain_deletes_everything_and_an_unknown_step_is_an_error(tree):
    parent, root = tree
    with pytest.raises(ValueError, match="not a step"):
        rp.forget("x", "tiny-5b-short")
    assert _left(parent, root)[0]  # nothing deleted by the bad name
    rp.forget("x", "pretrain")
    assert _left(parent, root) == (False, False, [], [])


def test_once_runs_again_only_when_the_checkpoint_changes(tmp_path):
    torch.manual_seed(0)
    model = Ministral3(TINY_CONFIGS["tiny-3b"].replace(num_hidden_layers=1, vocab_size=64))
    ckpt = save_pretrained(model, tmp_path / "ckpt")
    calls = []
    for _ in range(2):
        rp.once(tmp_path / "stamp.json", ckpt, lambda: calls.append(1))
    assert len(calls) == 1
    with torch.no_grad():
        model.lm_head.weight[0, 0] += 1
    save_pretrained(model, ckpt)
    rp.once(tmp_path / "stamp.json", ckpt, lambda: calls.append(1))
    assert len(calls) == 2


def test_step_clock_keeps_the_time_of_steps_that_did_work(tmp_path, monkeypatch):
    monkeypatch.setattr(rp, "results_dir", lambda scale: tmp_path / "results")
    out = tmp_path / "out"
    out.mkdir()
    clock = rp.StepClock("x")
    clock.run("claims", [out], lambda: (out / "f").write_text("x"))
    clock.run("longctx", [out], lambda: None)  # wrote nothing: not recorded
    rows = rp.read_csv(tmp_path / "results" / "reproduce_times.csv")
    assert [r["step"] for r in rows] == ["claims"]
    assert rp.StepClock("x").times["claims"]["seconds"] == rows[0]["seconds"]  # kept across runs


def test_step_clock_adds_the_runs_of_an_interrupted_step(tmp_path, monkeypatch):
    """A step stopped by Ctrl-C or SIGTERM is kept as ``interrupted`` with the time it ran; the run that finishes
    it records the sum, so a resumed step's time is its whole work."""
    monkeypatch.setattr(rp, "results_dir", lambda scale: tmp_path / "results")
    out = tmp_path / "out"
    out.mkdir()
    now = iter([100.0, 130.0, 200.0, 245.0])  # start and end of each run
    monkeypatch.setattr(rp.time, "time", lambda: next(now))

    def interrupted():
        (out / "part").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rp.StepClock("x").run("pretrain", [out], interrupted)
    assert rp.StepClock("x").times["pretrain"] == {"step": "pretrain", "seconds": "30.0", "finished": "interrupted"}
    rp.StepClock("x").run("pretrain", [out], lambda: (out / "done").write_text("x"))
    row = rp.StepClock("x").times["pretrain"]
    assert float(row["seconds"]) == 75.0 and row["finished"] != "interrupted"


def test_times_table_lists_steps_in_driver_order_with_the_total(tmp_path, monkeypatch):
    monkeypatch.setattr(rp, "results_dir", lambda scale: tmp_path)
    assert "no step times yet" in rp.times_table("x")
    rows = [
        {"step": "claims", "seconds": 90.0, "finished": "t2"},
        {"step": "pretrain", "seconds": 30.0, "finished": "t1"},
    ]
    rp.write_csv(rows, tmp_path / "reproduce_times.csv")
    lines = rp.times_table("x").splitlines()
    assert [line.split()[0] for line in lines[2:]] == ["pretrain", "claims", "total"]
    assert lines[-1].split()[1:] == ["120.0", "2.0"]


def test_from_a_post_training_step_keeps_the_cascade_vision_and_earlier_children(tree):
    parent, root = tree
    rp.forget("x", "tiny-8b-stem-rl")
    kept_post = ["tiny-14b-sft", "tiny-14b-stem-rl", "tiny-14b-general-rl", "tiny-8b-sft"]
    extra = ["vision-parent", "claims", "longctx", "vision-study", "teacher-sft", *kept_post]
    assert _left(parent, root) == (True, True, list(rp.CHILD_STEPS), extra)
    assert rp.STEPS.index("vision-study") < rp.STEPS.index("teacher-sft") < rp.STEPS.index("posttrain-study")


def test_from_odpo_keeps_every_model_before_it_and_the_reward_model(tree):
    parent, root = tree
    rp.forget("x", "tiny-8b-instruct-odpo")
    kept = ["tiny-14b-instruct-odpo", "tiny-14b-reasoning-odpo"]
    extra = ["vision-parent", "claims", "longctx", "vision-study", "teacher-sft", *rp.POST_STEPS, "posttrain-study",
             *rp.INSTRUCT_STEPS, "pwrm", *kept]  # fmt: skip
    assert _left(parent, root) == (True, True, list(rp.CHILD_STEPS), extra)
    order = [rp.STEPS.index(s) for s in ("score", "tiny-3b-general-rl", "posttrain-study", "tiny-3b-instruct-sft",
                                         "pwrm", "tiny-14b-instruct-odpo", "odpo-study")]  # fmt: skip
    assert order == sorted(order)


def test_from_pwrm_keeps_the_reasoning_study_and_every_sft(tree):
    parent, root = tree
    rp.forget("x", "pwrm")
    extra = ["vision-parent", "claims", "longctx", "vision-study", "teacher-sft", *rp.POST_STEPS, "posttrain-study",
             *rp.INSTRUCT_STEPS]  # fmt: skip
    assert _left(parent, root) == (True, True, list(rp.CHILD_STEPS), extra)


@pytest.fixture
def fake_steps(tmp_path, monkeypatch):
    """Every step function of the driver replaced by one that records its name: the driver's order, not its work."""
    calls = []
    monkeypatch.setattr(rp, "results_dir", lambda scale: tmp_path / "results")
    monkeypatch.setattr(rp, "cascade_dir", lambda scale: tmp_path / "cascade")
    monkeypatch.setattr(rp, "runs_dir", lambda: tmp_path)

    def step(name, out=None):
        return lambda *args: calls.append(name) or out

    class FakeCascade:
        def __init__(self, *args, **kwargs):
            self.prune, self.distil_short, self.extend_long = step("init"), step("short"), step("long")

    for name in ("pretrain_parent", "prune_study", "see_parent", "see_child", "run_claims", "run_longctx_study",
                 "run_vision_study", "teach", "sft_child", "rl_stage", "run_posttrain_study", "instruct_sft",
                 "reward_model", "odpo_stage", "run_odpo_study"):  # fmt: skip
        monkeypatch.setattr(rp, name, step(name))
    monkeypatch.setattr(rp, "report", step("report", {"cascade_table3": []}))
    monkeypatch.setattr(rp, "Cascade", FakeCascade)
    return calls


def test_until_score_stops_before_post_training_and_returns_the_tables(fake_steps):
    """Notebooks 04-06 call ``reproduce(scale, until="score")``: the Base models scored, no post-training."""
    assert rp.reproduce("ci", until="score") == {"cascade_table3": []}
    assert fake_steps[-4:] == ["run_claims", "run_longctx_study", "run_vision_study", "report"]
    assert fake_steps.count("see_child") == 3 and "teach" not in fake_steps
    fake_steps.clear()
    assert rp.reproduce("ci", until="prune-study") is None
    assert fake_steps == ["pretrain_parent", "prune_study"]
    fake_steps.clear()
    assert rp.reproduce("ci") == {"cascade_table3": []}  # every step: post-training after the score
    assert fake_steps.index("report") < fake_steps.index("teach") and fake_steps[-1] == "run_odpo_study"


def test_an_unknown_until_or_from_step_is_an_error_before_anything_runs(fake_steps):
    for kwargs in ({"until": "tiny-5b-short"}, {"from_step": "scoring"}):
        with pytest.raises(ValueError, match="not a step"):
            rp.reproduce("ci", **kwargs)
    assert fake_steps == []
