"""The training engine: schedule, sampler, exact resume, Ctrl-C, atomic checkpoints, config checks."""

import itertools
import json
import os
import signal

import pytest
import torch

import minimistral
from minimistral import ModelConfig
from minimistral.train import ResumeError, Sampler, TrainConfig, Trainer, Windows, lm_loss, lr_at

CFG = ModelConfig(
    vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=8, yarn_factor=None, llama_4_scaling_beta=None,
    original_max_position_embeddings=None, max_position_embeddings=64,
)  # fmt: skip


def data(n=40, seq=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    # a learnable pattern: each token is the previous one plus 1 (mod vocab), random starts
    start = torch.randint(0, 97, (n, 1), generator=g)
    return Windows((start + torch.arange(seq + 1)) % 97)


def model(seed=0):
    torch.manual_seed(seed)
    return minimistral.Ministral3(CFG)


def trainer(tmp_path, steps=8, **kw):
    cfg = TrainConfig(**({"steps": steps, "batch_size": 4, "grad_accum": 2, "lr": 1e-2, "warmup_steps": 2,
                         "eval_every": 3, "ckpt_every": 3, "log_every": 2} | kw))  # fmt: skip
    return Trainer(model(), cfg, data(), tmp_path, val_data=data(8, seed=1), device="cpu")


def test_schedule_warms_up_then_decays_to_min():
    cfg = TrainConfig(steps=100, lr=1.0, min_lr=0.1, warmup_steps=10)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
    assert lr_at(100, cfg) == pytest.approx(0.1)


def test_sampler_is_a_pure_function_of_position_and_covers_each_epoch():
    s = Sampler(10, 4, seed=3)
    first = torch.cat([s.indices(p) for p in range(5)])  # 20 = two epochs
    assert sorted(first[:10].tolist()) == list(range(10)) and sorted(first[10:].tolist()) == list(range(10))
    assert torch.equal(Sampler(10, 4, seed=3).indices(3), s.indices(3))
    ranks = [Sampler(10, 4, 3, rank=r, world=2).indices(0) for r in (0, 1)]  # batch_size is global
    assert torch.equal(torch.cat(ranks), s.indices(0))  # two ranks split one global micro-batch


def test_training_lowers_the_loss_and_logs(tmp_path):
    t = trainer(tmp_path, steps=30, ckpt_every=100)
    metrics = t.fit()
    losses = [m["loss"] for m in metrics if "loss" in m]
    vals = [m["val_loss"] for m in metrics if "val_loss" in m]
    assert losses[-1] < 0.5 * losses[0] and vals[-1] < vals[0]
    assert metrics[-1]["step"] == 30 and t.tokens == 30 * 2 * 4 * 16


def _params(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_resume_is_bitwise_exact(tmp_path, stop):
    """Stopped by Ctrl-C, or by SIGTERM (``kill``, Slurm's time limit, torchrun's shutdown), a run writes a
    checkpoint and resumes to bitwise the weights of an uninterrupted run."""
    straight = trainer(tmp_path / "a", steps=8)
    straight.fit()
    first = trainer(tmp_path / "b", steps=8)
    # stop after 5 steps, from inside the loss: KeyboardInterrupt as Ctrl-C raises it, or a SIGTERM from outside
    calls = {"n": 0}

    def interrupting_loss(m, batch):
        calls["n"] += m.training  # count training micro-batches, not validation ones
        if calls["n"] == 5 * 2 + 1:  # 5 steps x 2 micro-batches, then the signal
            if stop == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)  # the engine's handler raises KeyboardInterrupt here
            else:
                raise KeyboardInterrupt
        return lm_loss(m, batch)

    first.loss_fn = interrupting_loss
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    assert signal.getsignal(signal.SIGTERM) is before  # the engine's SIGTERM handler lives only inside fit
    state = json.loads((tmp_path / "b" / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 5 and state["data_position"] == 10
    resumed = trainer(tmp_path / "b", steps=8)  # a new process would build exactly this
    resumed.fit()
    a, b = _params(straight.model), _params(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the metrics log reads as if the run had never stopped
    steps_a = [m["step"] for m in straight.metrics()]
    steps_b = [m["step"] for m in resumed.metrics()]
    assert steps_a == steps_b


class FusedTrainer(Trainer):
    """The engine with the fused AdamW kernel, as on CUDA (CPU has it too)."""

    def build_optimizer(self):
        groups = [
            {k: g[k] for k in ("params", "weight_decay", "lr_scale")} for g in super().build_optimizer().param_groups
        ]
        return torch.optim.AdamW(groups, lr=self.cfg.lr, betas=(self.cfg.beta1, self.cfg.beta2), fused=True)


def test_a_run_resumed_on_another_device_uses_that_devices_optimizer_kernel(tmp_path):
    trainer(tmp_path, steps=6).fit(3)  # saved by the foreach kernel (CPU) after 3 steps
    cfg = trainer(tmp_path, steps=6).cfg
    resumed = FusedTrainer(model(), cfg, data(), tmp_path, val_data=data(8, seed=1), device="cpu")
    resumed.fit()
    assert resumed.step == 6 and all(g["fused"] and not g["foreach"] for g in resumed.optimizer.param_groups)


def test_checkpoint_is_a_standard_checkpoint(tmp_path):
    t = trainer(tmp_path, steps=3)
    t.fit()
    loaded = minimistral.from_pretrained(tmp_path / "checkpoint")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in t.model.state_dict().items())
    assert not (tmp_path / "checkpoint.tmp").exists() and not (tmp_path / "checkpoint.old").exists()


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    t = trainer(tmp_path, steps=3)
    t.fit()
    before = (tmp_path / "checkpoint" / "trainer_state.json").read_text()
    import minimistral.train as train_mod

    def broken_save(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(train_mod, "save_pretrained", broken_save)
    with pytest.raises(OSError):
        t.save()
    assert (tmp_path / "checkpoint" / "trainer_state.json").read_text() == before


@pytest.mark.parametrize("change", [dict(batch_size=8), dict(lr=1e-3), dict(steps=9)])
def test_resume_with_incompatible_config_is_a_clear_error(tmp_path, change):
    trainer(tmp_path, steps=3).fit()
    with pytest.raises(ResumeError, match=f"cannot resume: train config '{next(iter(change))}' was"):
        trainer(tmp_path, steps=change.pop("steps", 3), **change).fit()


def test_resume_with_a_different_model_is_a_clear_error(tmp_path):
    trainer(tmp_path, steps=3).fit()
    other = Trainer(minimistral.Ministral3(CFG.replace(intermediate_size=64)), TrainConfig(steps=3, batch_size=4,
                    grad_accum=2, lr=1e-2, warmup_steps=2), data(), tmp_path, device="cpu")  # fmt: skip
    with pytest.raises(ResumeError, match="model config 'intermediate_size' was 48, now 64"):
        other.fit()


def test_logging_frequencies_may_change_on_resume(tmp_path):
    trainer(tmp_path, steps=3).fit()
    t = trainer(tmp_path, steps=3, eval_every=1, log_every=1, ckpt_every=1)
    t.fit()
    assert t.step == 3


def test_compiled_engine_matches_eager_and_saves_plain_weights(tmp_path):
    """compile=True (torch.compile + fused AdamW) trains the same model as eager, to rounding."""
    eager = trainer(tmp_path / "eager", steps=4, ckpt_every=100).fit()
    compiled_trainer = trainer(tmp_path / "compiled", steps=4, ckpt_every=100, compile=True)
    compiled = compiled_trainer.fit()
    assert compiled_trainer.train_model is not compiled_trainer.model  # the compiled wrapper runs the steps
    losses = [[m["loss"] for m in run if "loss" in m] for run in (eager, compiled)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    loaded = minimistral.from_pretrained(tmp_path / "compiled" / "checkpoint")  # no "_orig_mod." prefixes
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in compiled_trainer.model.state_dict().items())


def test_extra_scalars_are_logged_and_validation_may_use_another_loss(tmp_path):
    def loss_with_extra(m, batch):
        out = lm_loss(m, batch)
        return out | {"twice": 2 * out["loss"].detach()}

    def doubled_val(m, batch):
        out = lm_loss(m, batch)
        return out | {"loss": 2 * out["loss"]}

    t = trainer(tmp_path, steps=4, ckpt_every=100, log_every=1, eval_every=4)
    t.loss_fn, t.val_loss_fn = loss_with_extra, doubled_val
    metrics = t.fit()
    logged = [m for m in metrics if "loss" in m]
    assert all(m["twice"] == pytest.approx(2 * m["loss"], rel=1e-6) for m in logged)
    val = [m["val_loss"] for m in metrics if "val_loss" in m][-1]
    t.val_loss_fn = None  # validation falls back to the training loss
    assert val == pytest.approx(2 * t.evaluate(), rel=1e-6)


def test_activation_checkpointing_trains_the_same_run_and_keeps_only_the_block_inputs(tmp_path):
    """Each block recomputed in backward: bitwise the same steps; autograd no longer keeps the blocks' activations."""
    from minimistral.arch.model import set_activation_checkpointing
    from minimistral.plan import saved_activation_bytes

    plain = trainer(tmp_path / "plain", steps=3).fit()
    t = trainer(tmp_path / "ckpt", steps=3, activation_checkpointing=True)
    assert t.model.model.checkpointing
    assert [m.get("loss") for m in t.fit()] == [m.get("loss") for m in plain]
    m, batch = model(), data(2).batch(torch.arange(2))
    kept = saved_activation_bytes(m, batch)
    set_activation_checkpointing(m)
    assert saved_activation_bytes(m, batch) < kept / 3  # the head's and final norm's remain
    with torch.no_grad():
        assert torch.equal(m(batch), model()(batch))  # inference never recomputes


def test_pretraining_from_init_starts_from_those_weights(tmp_path):
    """``pretrain(init=...)`` (a curriculum's later phase) trains the given weights: its first logged loss
    (the loss before the first update) is that of a run whose random initialisation is those weights;
    weights of another shape are a one-line error naming the checkpoint."""
    from minimistral.arch.hub import save_pretrained
    from minimistral.errors import CheckpointError
    from minimistral.pretrain import PARENT, pretrain

    config = minimistral.get_config(PARENT).replace(num_hidden_layers=1, hidden_size=32, intermediate_size=64)

    def first_loss(out, **kw):
        pretrain("ci", out=out, compile=False, max_steps=1, model_config=config, **kw)
        return next(json.loads(line) for line in (out / "metrics.jsonl").open() if '"loss"' in line)["loss"]

    torch.manual_seed(0)  # the initialisation pretrain() draws itself
    save_pretrained(minimistral.Ministral3(config), tmp_path / "same")
    torch.manual_seed(1)
    save_pretrained(minimistral.Ministral3(config), tmp_path / "other")
    fresh = first_loss(tmp_path / "fresh")
    assert first_loss(tmp_path / "a", init=tmp_path / "same") == fresh
    assert first_loss(tmp_path / "b", init=tmp_path / "other") != fresh
    save_pretrained(minimistral.Ministral3(config.replace(hidden_size=48)), tmp_path / "wide")
    with pytest.raises(CheckpointError, match=r"wide: not the weights of this model \(hidden_size 48, this model 32\)"):
        first_loss(tmp_path / "c", init=tmp_path / "wide")
    # extra_windows join the stream: a run whose windows are nearly all one repeated token starts elsewhere
    from minimistral.scales import get_scale

    constant = torch.full((10_000, get_scale("ci").pretrain.seq_len + 1), 5)  # [n, seq_len + 1]
    assert first_loss(tmp_path / "d", extra_windows=constant) != fresh
    with pytest.raises(ValueError, match=r"extra_windows: shape \(3, 7\), want \[n, \d+\]"):
        first_loss(tmp_path / "e", extra_windows=constant[:3, :7])
