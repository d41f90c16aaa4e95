"""Post-training II: the pairwise reward model's pieces, ODPO's online loop, Instruct SFT's aligned KL, the steps."""

import json
import math
import shutil

import pytest
import torch
from conftest import tiny_checkpoints

from minimistral.data.corpus import build_corpus
from minimistral.data.tokenizer import load_tokenizer
from minimistral.posttrain.chat import END_THINK, THINK
from minimistral.posttrain.odpo import ODPOConfig, ODPOTrainer, looping, pair_probability
from minimistral.posttrain.pwrm import (
    Pair,
    expected_calibration_error,
    fit_temperature,
    judge_messages,
    load_pairs,
    pair_examples,
    position_bias,
    ranked_pairs,
    read_temperature,
    reliability,
    save_pairs,
    symmetric_prob,
    verdict_ids,
    verdict_logits,
    write_temperature,
)
from minimistral.posttrain.rollouts import Rollout


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    (d / "tokenizer.json").write_bytes(build_corpus().tokenizer_path.read_bytes())
    return load_tokenizer(d)


def _model(layers=1, seed=0):
    from minimistral.arch.config import TINY_CONFIGS
    from minimistral.arch.model import Ministral3

    torch.manual_seed(seed)
    return Ministral3(TINY_CONFIGS["tiny-3b"].replace(num_hidden_layers=layers))


# ----------------------------------------------------------------------------- the PWRM's pieces
def test_pairs_labels_and_both_orders(tok):
    pair = Pair("Hi?", "well hello!", "hello", 1.0, 0.5)
    assert pair.label == 1.0 and pair.swapped().label == 0.0 and pair.swapped().swapped() == pair
    assert Pair("q", "a", "b", 0.5, 0.5).label == 0.5
    messages = judge_messages(pair, with_verdict=True)
    assert messages[0]["content"].startswith("Hi?\n\nResponse A: well hello!\n\nResponse B: hello")
    assert messages[1] == {"role": "assistant", "content": "A"}
    assert judge_messages(pair.swapped(), with_verdict=True)[1]["content"] == "B"
    with pytest.raises(ValueError, match="tied"):
        judge_messages(Pair("q", "a", "b", 0.5, 0.5), with_verdict=True)
    a, b = verdict_ids(tok)
    assert tok.decode([a]) == "A" and tok.decode([b]) == "B"
    examples = pair_examples([pair], tok, 256)  # both orders; the verdict and </s> are learned
    assert len(examples) == 2
    ids, mask = examples.rows[0]
    assert [t for t, m in zip(ids, mask, strict=True) if m] == [a, 2] and examples.rows[1][0][-2] == b


def test_ranked_pairs_keep_distinct_answers_the_judge_ranks():
    pairs = ranked_pairs("q", ["x", "y", "x", "z", "w"], [1.0, 0.5, 1.0, 0.5, 0.0], most=10)
    assert len(pairs) == 5  # x>y, x>z, x>w, y>w, z>w; the duplicate "x" and the tie y=z give no pair
    assert all(p.score_a != p.score_b for p in pairs) and len({(p.a, p.b) for p in pairs}) == 5
    assert len(ranked_pairs("q", ["x", "y", "z", "w"], [1.0, 0.5, 0.5, 0.0], most=2)) == 2
    assert ranked_pairs("q", ["x", "y"], [0.5, 0.5], most=3) == []


def test_temperature_scaling_recovers_a_known_temperature():
    g = torch.Generator().manual_seed(0)
    z = 4 * torch.randn(20_000, generator=g)  # logits three times too confident
    labels = (torch.rand(20_000, generator=g) < torch.sigmoid(z / 3)).float()
    assert fit_temperature(z, labels) == pytest.approx(3.0, rel=0.08)
    assert (
        expected_calibration_error(torch.sigmoid(z / 3), labels)
        < 0.02
        < expected_calibration_error(torch.sigmoid(z), labels)
    )
    with pytest.raises(ValueError, match="no pairs"):
        fit_temperature(torch.zeros(0), torch.zeros(0))


def test_calibration_error_reliability_and_position_bias_closed_forms():
    probs, labels = torch.tensor([0.9, 0.9, 0.9, 0.9, 0.15, 0.15]), torch.tensor([1, 1, 0, 0, 0, 0])
    # bin 0.9: predicted 0.9, observed 0.5 (4 pairs); bin 0.1: predicted 0.15, observed 0 (2 pairs)
    assert expected_calibration_error(probs, labels) == pytest.approx((4 * 0.4 + 2 * 0.15) / 6)
    bins = reliability(probs, labels)
    assert [b["count"] for b in bins] == [0, 2, 0, 0, 0, 0, 0, 0, 0, 4] and bins[9]["observed"] == 0.5
    assert position_bias(torch.tensor([0.7, 0.6]), torch.tensor([0.3, 0.4])) == pytest.approx(0.0)
    assert position_bias(torch.tensor([0.8, 0.9]), torch.tensor([0.6, 0.5])) == pytest.approx(0.4)  # favours A


def test_calibration_file_errors_name_the_file(tmp_path):
    assert read_temperature(tmp_path) == 1.0  # before calibration
    write_temperature(tmp_path, 2.5, pairs=10)
    assert read_temperature(tmp_path) == 2.5
    (tmp_path / "calibration.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"calibration\.json: not a PWRM calibration"):
        read_temperature(tmp_path)
    (tmp_path / "calibration.json").write_text('{"temperature": -1}')
    with pytest.raises(ValueError, match="must be > 0"):
        read_temperature(tmp_path)


def test_pairs_files_round_trip_and_errors_name_the_file(tmp_path):
    pairs = [Pair("q", "a", "b", 1.0, 0.0), Pair("q", "c", "d", 0.25, 0.5)]
    save_pairs(pairs, tmp_path / "pairs.jsonl")
    assert load_pairs(tmp_path / "pairs.jsonl") == pairs
    with pytest.raises(ValueError, match=r"missing\.jsonl: no such pairs file"):
        load_pairs(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "q"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl: not a pairs file"):
        load_pairs(tmp_path / "bad.jsonl")


def test_symmetric_probability_cancels_a_position_preference():
    z = torch.tensor([0.0, 2.0, -1.0])
    bias = 3.0  # the judge adds 3 to the verdict logit of whichever answer is shown first
    flat = symmetric_prob(torch.full((3,), bias), torch.full((3,), bias), 1.0)
    assert torch.allclose(flat, torch.full((3,), 0.5))  # pure position preference: no verdict
    expected = torch.sigmoid(z / 2)  # a judge consistent in both orders: z_ba = -z_ab, then P = sigma(z / T)
    assert torch.allclose(symmetric_prob(z, -z, 2.0), expected)


def test_verdict_logits_read_the_verdict_position_whatever_the_batch(tok):
    model = _model().eval()
    pairs = [Pair("What is a cat?", "an animal", "a car that flies over the sea", 1, 0), Pair("Hi", "yo", "hey", 0, 1)]
    batched = verdict_logits(model, tok, pairs)
    a, b = verdict_ids(tok)
    from minimistral.posttrain.chat import encode_prompt

    for pair, z in zip(pairs, batched, strict=True):
        ids = torch.tensor([encode_prompt(tok, judge_messages(pair))])
        logits = model(ids)[0, -1]
        assert z.item() == pytest.approx((logits[a] - logits[b]).item(), abs=1e-5)


# ----------------------------------------------------------------------------- ODPO's rules
def test_loops_lose_and_two_loops_tie():
    assert looping(Rollout(0, [5, 6, 7])) and not looping(Rollout(0, [5, 6, 7, 2]))  # no </s>: loops
    assert looping(Rollout(0, [5, 6, 7, 8] * 3 + [2])) and not looping(Rollout(0, [5, 6, 7, 8] * 2 + [2]))
    assert pair_probability(False, False, 0.7) == 0.7
    assert pair_probability(True, False, 0.9) == 0.0 and pair_probability(False, True, 0.1) == 1.0
    assert pair_probability(True, True, 0.9) == 0.5


class _LowIds:
    """A judge for the loop's test: prefers the answer whose characters come earlier in the alphabet."""

    temperature = 1.0

    def to(self, device):
        return self

    def prob(self, pairs):
        score = [sum(map(ord, p.a)) / max(1, len(p.a)) - sum(map(ord, p.b)) / max(1, len(p.b)) for p in pairs]
        return torch.sigmoid(-torch.tensor(score) / 4)


def _odpo(tmp_path, tok, steps, name="odpo", judge=None, score=None, **options):
    from minimistral.posttrain.grpo import Prompts
    from minimistral.train import TrainConfig

    texts = [f"Say something {i}" for i in range(8)]
    prompts = Prompts([[1, 3, *tok.encode(t, bos=False), 4] for t in texts])
    cfg = TrainConfig(steps=steps, batch_size=4, lr=3e-3, min_lr=3e-3, warmup_steps=1, ckpt_every=1, log_every=1)
    odpo = ODPOConfig(**({"max_new_tokens": 6, "beta": 0.5} | options))
    return ODPOTrainer(_model(), cfg, odpo, prompts, texts, judge or _LowIds(), tok, tmp_path / name, _model(),
                       score=score, device="cpu")  # fmt: skip


def test_odpo_starts_at_log_two_and_logs_its_iteration(tmp_path, tok):
    log = _odpo(tmp_path, tok, steps=2).fit()
    first = log[0]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5) and first["margin"] == pytest.approx(0, abs=1e-5)
    assert {"confidence", "loops", "length", "agree"} <= set(first) and 0 <= first["loops"] <= 1


def test_odpo_logs_how_often_the_programmatic_judge_backs_its_pairs(tmp_path, tok):
    """With ``score`` (logged only), each iteration records the share of pairs the program scores equal and
    the share it separates the way P(a wins) leans; the loss is the run's without it."""
    scored = []

    def parity(i, rollout):  # a program that separates some pairs and ties others
        scored.append(float(sum(rollout.ids) % 2))
        return scored[-1]

    log = [r for r in _odpo(tmp_path, tok, steps=2, score=parity).fit() if "loss" in r]
    plain = [r for r in _odpo(tmp_path, tok, steps=2, name="plain").fit() if "loss" in r]
    assert [r["loss"] for r in log] == [r["loss"] for r in plain]
    for step, row in enumerate(log):  # 4 prompts x 2 answers per iteration
        mine = scored[8 * step : 8 * step + 8]
        ties = sum(a == b for a, b in zip(mine[0::2], mine[1::2], strict=True)) / 4
        assert row["program_ties"] == pytest.approx(ties)
        assert 0 <= row["program_followed"] <= 1 - row["program_ties"]


def test_odpo_resumes_bitwise_between_iterations(tmp_path, tok):
    from minimistral.train import ResumeError

    straight = _odpo(tmp_path, tok, steps=3, name="a")
    straight.fit()

    class Interrupting(_LowIds):
        calls = 0

        def prob(self, pairs):
            Interrupting.calls += 1
            if Interrupting.calls == 2:  # Ctrl-C while judging the second iteration
                raise KeyboardInterrupt
            return super().prob(pairs)

    with pytest.raises(KeyboardInterrupt):
        _odpo(tmp_path, tok, steps=3, name="b", judge=Interrupting()).fit()
    resumed = _odpo(tmp_path, tok, steps=3, name="b")
    resumed.fit()
    assert [r["step"] for r in resumed.metrics() if "loss" in r] == [1, 2, 3]
    for (name, p), q in zip(straight.model.named_parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q), name
    with pytest.raises(ResumeError, match="ODPO config"):
        _odpo(tmp_path, tok, steps=3, name="b", beta=0.1).fit()


# ----------------------------------------------------------------------------- Instruct SFT
def test_instruct_examples_learn_the_answer_the_teacher_reads_after_thinking(tok):
    from minimistral.distill import ResponseDistillLoss, response_logits
    from minimistral.posttrain.sft import AnswerExamples
    from minimistral.posttrain.tasks import stem_split

    chats = [p.chat() for p in stem_split(3, 1)["train"]]
    data = AnswerExamples(chats, tok, 256)
    batch = data.batch(torch.arange(3))
    assert THINK not in batch["input_ids"] and END_THINK in batch["teacher"]["input_ids"]
    assert torch.equal(batch["mask"].sum(-1), batch["teacher"]["mask"].sum(-1))
    for r in range(3):  # the learned tokens are the same answer, in the same order
        assert torch.equal(
            batch["targets"][r][batch["mask"][r]], batch["teacher"]["targets"][r][batch["teacher"]["mask"][r]]
        )
    student, teacher = _model(seed=1), _model(seed=2)
    got = ResponseDistillLoss(teacher)(student, batch)["loss"]
    s = torch.log_softmax(response_logits(student, batch)[batch["mask"]], -1)  # [N, vocab]
    t = torch.log_softmax(response_logits(teacher, batch["teacher"])[batch["teacher"]["mask"]], -1)
    assert got.item() == pytest.approx((t.exp() * (t - s)).sum(-1).mean().item(), rel=1e-5)
    bad = batch | {"teacher": batch["teacher"] | {"mask": batch["teacher"]["mask"] & False}}
    with pytest.raises(ValueError, match="as many learned tokens"):
        ResponseDistillLoss(teacher)(student, bad)


# ----------------------------------------------------------------------------- the steps at CI scale
def _chatty(start, out):
    """A 1-layer policy taught by next-token SFT to answer the rubric prompts at once (and so to end)."""
    from minimistral.posttrain.pipeline import posttrain_data
    from minimistral.posttrain.sft import sft
    from minimistral.train import TrainConfig

    data = posttrain_data(str(start), "ci")
    cfg = TrainConfig(steps=30, batch_size=8, lr=1e-2, min_lr=1e-2, warmup_steps=1, eval_every=100, ckpt_every=100)
    return sft(start, data.answers, out, cfg)


def test_instruct_pwrm_and_odpo_steps_run_once_at_ci_scale(tmp_path, tok):
    from minimistral.arch.hub import from_pretrained
    from minimistral.posttrain.pipeline import instruct_sft, odpo_stage, reward_model
    from minimistral.posttrain.pwrm import PairwiseRewardModel, load_pairs

    dirs = tiny_checkpoints(tmp_path, parent=2, child=1)
    instruct = instruct_sft(dirs["child"], dirs["parent"], tmp_path / "instruct", "ci")
    log = [json.loads(line) for line in (tmp_path / "instruct" / "metrics.jsonl").read_text().splitlines()]
    assert "kl" in log[0] and any("val_loss" in r for r in log)
    with pytest.raises(ValueError, match=r"pwrm: .* no pair the judge ranks"):  # random policies never end
        reward_model([(instruct, False)], dirs["parent"], tmp_path / "pwrm-none", "ci")
    chatty = _chatty(dirs["child"], tmp_path / "chatty")  # ends its answers, so the judge ranks them
    judge = reward_model([(chatty, False), (instruct, False)], dirs["parent"], tmp_path / "pwrm", "ci")
    assert (judge / "calibration.json").is_file() and read_temperature(judge) > 0
    train = load_pairs(tmp_path / "pwrm" / "pairs-train.jsonl")
    assert all(p.score_a != p.score_b for p in train)
    probs = PairwiseRewardModel(judge).prob([Pair("Hi?", "well yes!", "no", 1, 0)])
    assert probs.shape == (1,) and 0 < probs.item() < 1
    out = odpo_stage(instruct, judge, tmp_path / "odpo", "ci", thinking=True)
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["odpo_config"]["thinking"] and state["odpo_config"]["temperature"] == 0.7
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    assert odpo_stage(instruct, judge, tmp_path / "odpo", "ci", thinking=True) == out  # done: returns at once
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime
    assert from_pretrained(out).config.num_hidden_layers == 1
    shutil.rmtree(judge / "model.safetensors", ignore_errors=True)
    (judge / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(Exception, match=r"model\.safetensors"):
        PairwiseRewardModel(judge)


def test_odpo_study_tables_at_ci_scale(tmp_path, tok, monkeypatch):
    from minimistral.posttrain import odpo_study
    from minimistral.posttrain.pwrm import save_pairs
    from minimistral.posttrain.study import CHILD_MODELS

    monkeypatch.setattr(odpo_study, "results_dir", lambda scale: tmp_path / "results")
    one = tiny_checkpoints(tmp_path, one=1)["one"]
    root = tmp_path / "root"
    for child in CHILD_MODELS:
        for stage in ("general-rl", "reasoning-odpo", "instruct-sft", "instruct-odpo"):
            shutil.copytree(one, root / f"{child}-{stage}" / "checkpoint")
    shutil.copytree(one, root / "pwrm" / "checkpoint")
    save_pairs([Pair("Hi?", "well yes!", "no", 1.0, 0.0), Pair("Who?", "me", "you!", 0.0, 0.5)],
               root / "pwrm" / "pairs-test.jsonl")  # fmt: skip
    tables = odpo_study.run_odpo_study(root, "ci")
    pwrm = tables["odpo_pwrm"][0]
    assert pwrm["pairs"] == 2 and pwrm["temperature"] == 1.0 and 0 <= pwrm["agreement"] <= 1
    assert len(tables["odpo_reliability"]) == 2 * 10
    wins = tables["odpo_wins"]
    assert [(r["model"], r["kind"]) for r in wins[:2]] == [("tiny-14b", "Reasoning"), ("tiny-14b", "Instruct")]
    assert len(wins) == 3 * 2 + 1 and all(r["ci_low"] <= r["win_rate"] <= r["ci_high"] for r in wins)
    assert wins[-1]["kind"] == "Reasoning, fixed beta"
    assert {r["stage"] for r in tables["odpo_scores"]} == {"instruct-sft", "instruct-odpo", "reasoning-odpo"}
    assert [r["image questions"] for r in tables["odpo_table4"]] == [""] * 6  # text-only models: no image column
    assert (tmp_path / "results" / "odpo_table4.csv").is_file()
    assert odpo_study.run_odpo_study(root, "ci")["odpo_pwrm"][0]["pairs"] == "2"  # done: read back
    assert odpo_study.odpo_curves(root)["tiny-3b"] == {"Reasoning": [], "Instruct": []}  # copies: no logs


def test_win_rate_closed_form():
    from minimistral.posttrain.odpo_study import win_rate

    assert win_rate([0.0, 1.0], [0.5, 0.5]) == 0.5  # one win, one loss per sample after
    assert win_rate([0.5], [0.5, 1.0]) == 0.75  # a tie and a win


def test_odpo_figures_draw_what_they_are_given():
    import matplotlib

    matplotlib.use("Agg")
    from minimistral.show.posttrain import plot_odpo_loss, plot_reliability, plot_win_rates

    fig = plot_odpo_loss(beta=0.1, probs=(1.0, 0.8))
    assert len(fig.axes[0].lines) == 3  # two curves and the p = 0.8 optimum at logit(0.8) / beta
    assert fig.axes[0].lines[-1].get_xdata()[0] == pytest.approx(math.log(4) / 0.1)
    cells = (("raw", 4, 0.9, 0.6), ("raw", 0, "nan", "nan"), ("calibrated", 4, 0.7, 0.6))
    bins = [{"temperature": t, "count": c, "predicted": p, "observed": o} for t, c, p, o in cells]
    fig = plot_reliability(bins)
    assert [len(c.get_offsets()) for c in fig.axes[0].collections] == [1, 1]
    rows = [{"model": m, "kind": k, "win_rate": 0.6, "ci_low": 0.5, "ci_high": 0.7}
            for m in ("tiny-14b", "tiny-3b") for k in ("Reasoning", "Instruct")]  # fmt: skip
    from minimistral.show.posttrain import plot_odpo_curves

    log = [{"step": i, "confidence": 0.1, "agree": 0.5, "length": 9.0} for i in (1, 2)]
    fig = plot_odpo_curves({"tiny-3b": {"Instruct": log, "Reasoning": log}})
    assert len(fig.axes) == 3 and [len(ax.lines) for ax in fig.axes] == [2, 2, 2]
    fig = plot_win_rates(rows)
    heights = sorted(round(p.get_height(), 6) for p in fig.axes[0].patches)
    assert heights == [10.0] * 4 and fig.axes[0].get_legend() is not None
    from minimistral.evaluate.paper_tables import read_offs
    from minimistral.show.results import plot_odpo_effect

    fig = plot_odpo_effect(read_offs("fig6_odpo_effect"), [r | {"kind": "Reasoning"} for r in rows[::2]])
    left, right = fig.axes
    assert sorted(round(p.get_height(), 1) for p in left.patches) == [2.0, 7.5, 8.5, 16.0, 19.5]  # 3B: WildBench only
    assert [round(p.get_height(), 6) for p in right.patches] == [10.0, 10.0]
