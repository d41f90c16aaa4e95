"""Data-parallel training under torchrun, on CPU with gloo: N processes train the same run as one process."""

import dataclasses
import json
import math
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import tiny_checkpoints
from safetensors.torch import load_file

import minimistral
from minimistral import ModelConfig
from minimistral.train import Sampler, TrainConfig, Trainer, Windows, read_metrics

CFG = ModelConfig(
    vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=8, yarn_factor=None, llama_4_scaling_beta=None,
    original_max_position_embeddings=None, max_position_embeddings=64,
)  # fmt: skip
STEPS = TrainConfig(steps=5, batch_size=4, grad_accum=2, lr=1e-2, warmup_steps=1, eval_every=2, ckpt_every=100,
                    log_every=1)  # fmt: skip

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")


def windows(n, seed):
    g = torch.Generator().manual_seed(seed)
    return Windows((torch.randint(0, 97, (n, 1), generator=g) + torch.arange(17)) % 97)


def train(out, max_steps=None, cfg=STEPS, rank=0):
    """One rank's part of the run: the same model on every rank, except that rank 1 starts from other weights
    (the engine must broadcast rank 0's)."""
    torch.manual_seed(rank)
    trainer = Trainer(minimistral.Ministral3(CFG), cfg, windows(40, 0), out, val_data=windows(8, 1), device="cpu")
    trainer.fit(max_steps)


def _worker(rank, world, port, job, *args):
    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        job(*args, rank=rank)
    finally:
        dist.destroy_process_group()


def spawn(world, job, *args):
    """``job(*args, rank=r)`` in ``world`` processes joined by gloo (one process: called here)."""
    if world == 1:
        job(*args)
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(world, port, job, *args), nprocs=world)


def run(out, world, max_steps=None, cfg=STEPS):
    spawn(world, train, str(out), max_steps, cfg)


def losses(out):
    return [m["loss"] for m in read_metrics(out) if "loss" in m], [m["val_loss"] for m in read_metrics(out)
                                                                   if "val_loss" in m]  # fmt: skip


def weights(out):
    return load_file(out / "checkpoint" / "model.safetensors")


def close(a, b, rel=1e-5):
    return all(abs(x - y) <= rel * abs(y) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    run(out, 1)
    return out


def test_two_processes_train_the_same_run_as_one(one, tmp_path):
    run(tmp_path, 2)
    (train_1, val_1), (train_2, val_2) = losses(one), losses(tmp_path)
    assert len(train_2) == 5 and close(train_2, train_1) and close(val_2, val_1)
    w1, w2 = weights(one), weights(tmp_path)
    assert all(torch.allclose(w2[k], w1[k], rtol=0, atol=1e-5) for k in w1)  # fp32 sums in another order: ~3e-6
    state = json.loads((tmp_path / "checkpoint" / "trainer_state.json").read_text())
    assert state["tokens"] == 5 * 2 * 4 * 16 and state["world_size"] == 2  # every rank's tokens counted once


def test_an_interrupted_two_process_run_resumes_bitwise(tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    run(straight, 2)
    run(stopped, 2, max_steps=3)
    assert json.loads((stopped / "checkpoint" / "trainer_state.json").read_text())["step"] == 3
    run(stopped, 2)
    assert losses(stopped) == losses(straight)
    w1, w2 = weights(straight), weights(stopped)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_a_run_resumes_with_a_different_number_of_processes(one, tmp_path):
    run(tmp_path, 1, max_steps=3)
    run(tmp_path, 2)
    assert close(losses(tmp_path)[0], losses(one)[0])
    w1, w2 = weights(one), weights(tmp_path)
    assert all(torch.allclose(w2[k], w1[k], rtol=0, atol=1e-5) for k in w1)  # fp32 sums in another order: ~3e-6


def test_the_global_batch_does_not_depend_on_the_number_of_processes():
    for position in range(7):
        one = Sampler(30, 6, seed=2).indices(position)
        for world in (2, 3):
            parts = [Sampler(30, 6, seed=2, rank=r, world=world).indices(position) for r in range(world)]
            assert torch.equal(torch.cat(parts), one)
    with pytest.raises(ValueError, match="batch_size 6 is not divisible by the 4 processes"):
        Sampler(30, 6, seed=2, rank=0, world=4)


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(
    sys.executable), "torchrun")), reason="no torchrun")  # fmt: skip
def test_torchrun_pretrain_matches_one_process(tmp_path):
    """The check in the README: ``torchrun --nproc_per_node 2 -m minimistral pretrain --scale ci --max-steps 3``."""
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    args = ["-m", "minimistral", "pretrain", "--scale", "ci", "--max-steps", "3", "--device", "cpu", "--no-compile"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], check=True, env=env)
    subprocess.run([torchrun, "--nproc_per_node", "2", *args, "--out", str(tmp_path / "two")], check=True, env=env)
    assert close(losses(tmp_path / "two")[0], losses(tmp_path / "one")[0])
    assert len(losses(tmp_path / "one")[0]) >= 1


def cascade_job(parent, root, fsdp=False, rank=0):
    """The micro cascade in this process (``spawn`` runs it on every rank), FSDP2 on or off."""
    from minimistral.cascade.pipeline import Cascade
    from minimistral.scales import CascadeScale

    micro = CascadeScale(
        short_steps=2,
        long_steps=1,
        batch_size=8,
        warmup_steps=1,
        calib_windows=4,
        eval_every=1,
        eval_batches=1,
        ckpt_every=1,
    )  # fmt: skip; the long stage takes batch 8 / 4 = 2, one per rank
    os.environ["MINIMISTRAL_FSDP"] = str(int(fsdp))  # read by every stage's TrainConfig
    Cascade(parent, root, micro, device="cpu").run()


def test_the_cascade_under_two_processes_matches_one(tmp_path):
    """Every stage of Algorithm 1 under torchrun: rank 0 prunes, every rank distils; the same run as one process,
    replicated (DDP-style) and sharded (FSDP2, the parent teacher sharded too)."""
    from minimistral.arch.config import TINY_CONFIGS
    from minimistral.arch.hub import save_pretrained

    parent = tmp_path / "parent"
    torch.manual_seed(0)
    save_pretrained(minimistral.Ministral3(TINY_CONFIGS["tiny-24b"]), parent)
    spawn(1, cascade_job, parent, tmp_path / "one")
    for name, fsdp in (("two", False), ("sharded", True)):
        spawn(2, cascade_job, parent, tmp_path / name, fsdp)
        compare_cascades(tmp_path / "one", tmp_path / name)


def compare_cascades(first, second):
    from minimistral.arch.hub import from_pretrained
    from minimistral.cascade.pipeline import training_curve

    one, two = list(training_curve(first)), list(training_curve(second))
    assert [r["stage"] for r in one] == [r["stage"] for r in two] and len(one) > 0
    first_child = [k for k, r in enumerate(one) if r["stage"].startswith("tiny-14b")]  # pruned from the same parent
    l1, l2 = [r["loss"] for r in one], [r["loss"] for r in two]
    assert close([l2[k] for k in first_child], [l1[k] for k in first_child], rel=1e-4)
    ids = torch.randint(0, 4096, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = (from_pretrained(d / "tiny-14b-long" / "checkpoint")(ids) for d in (first, second))
    assert torch.allclose(a, b, atol=1e-3)  # ~1e-4 apart: Adam magnifies last-bit gradient differences
    # The next children are pruned from a Short stage that differs in the last bits; on this random parent the
    # hidden-size PCA has near-tied eigenvalues, so their bases (not their losses) may differ between the runs.
    assert close(l2, l1, rel=1e-3)


# ----------------------------------------------------------------------------- FSDP2
FSDP = dataclasses.replace(STEPS, fsdp=True)


def test_fsdp2_trains_the_same_run_as_one_process_and_writes_an_ordinary_checkpoint(one, tmp_path):
    run(tmp_path, 2, cfg=FSDP)
    (train_1, val_1), (train_2, val_2) = losses(one), losses(tmp_path)
    assert len(train_2) == 5 and close(train_2, train_1) and close(val_2, val_1)
    w1, w2 = weights(one), weights(tmp_path)
    assert w1.keys() == w2.keys() and all(torch.allclose(w2[k], w1[k], rtol=0, atol=1e-5) for k in w1)
    ids = torch.arange(16)[None] % 97
    with torch.no_grad():  # an HF directory as any other: from_pretrained reads it, no conversion
        a, b = (minimistral.from_pretrained(d / "checkpoint")(ids) for d in (one, tmp_path))
    assert torch.allclose(a, b, atol=1e-4)


def test_an_interrupted_fsdp2_run_resumes_bitwise_and_resumes_without_fsdp2(tmp_path):
    straight, stopped, unsharded = tmp_path / "straight", tmp_path / "stopped", tmp_path / "unsharded"
    run(straight, 2, cfg=FSDP)
    run(stopped, 2, max_steps=3, cfg=FSDP)
    shutil.copytree(stopped, unsharded)
    run(stopped, 2, cfg=FSDP)
    assert losses(stopped) == losses(straight)
    w1, w2 = weights(straight), weights(stopped)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    run(unsharded, 1)  # the gathered optimizer state is the one a single process keeps
    assert close(losses(unsharded)[0], losses(straight)[0])
    assert all(torch.allclose(weights(unsharded)[k], w1[k], rtol=0, atol=1e-5) for k in w1)


def distil(out, cfg, rank=0):
    """Distil a 2-layer student from a wider 3-layer teacher; sharded, the teacher is sharded too."""
    from minimistral.distill import distill
    from minimistral.distributed import is_sharded, rank_world

    torch.manual_seed(0)
    teacher = minimistral.Ministral3(dataclasses.replace(CFG, hidden_size=48, num_hidden_layers=3))
    student = minimistral.Ministral3(CFG)
    distill(student, teacher, windows(40, 0), out, cfg, val_data=windows(8, 1), device="cpu")
    assert is_sharded(teacher) == (cfg.fsdp and rank_world()[1] > 1)


def test_fsdp2_distillation_shards_the_teacher_and_matches_one_process(tmp_path):
    spawn(1, distil, str(tmp_path / "one"), STEPS)
    spawn(2, distil, str(tmp_path / "two"), FSDP)
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    for key in ("loss", "kl", "teacher_ce", "val_loss"):
        a, b = [m[key] for m in one if key in m], [m[key] for m in two if key in m]
        assert len(a) > 0 and close(b, a), key


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(
    sys.executable), "torchrun")), reason="no torchrun")  # fmt: skip
def test_prune_then_distil_a_checkpoint_under_torchrun_with_fsdp2(tmp_path):
    """The README's real-checkpoint recipe on a small transformers model: ``minimistral prune``, then
    ``torchrun --nproc_per_node 2 -m minimistral distill --fsdp``: the same losses as one process."""
    pytest.importorskip("transformers")
    from test_prune import hf_checkpoint

    from minimistral.cli import main

    src, text = hf_checkpoint(tmp_path)
    student = tmp_path / "student"
    prune = ["prune", "--checkpoint", str(src), "--out", str(student), "--layers", "3", "--hidden", "32"]
    assert main([*prune, "--calib", str(text), "--calib-tokens", "512", "--seq-len", "32"]) == 0
    windows = str(tmp_path / "windows.safetensors")  # encoded once, as for a large corpus
    tokenize = ["tokenize", "--checkpoint", str(student), "--data", str(text), "--tokens", "2048", "--seq-len", "32"]
    assert main([*tokenize, "--out", windows]) == 0
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    args = ["-m", "minimistral", "distill", "--student", str(student), "--teacher", str(src),
            "--tokens", "2048", "--seq-len", "32", "--steps", "4", "--batch-size", "4", "--warmup-steps", "1",
            "--lr", "1e-2", "--eval-every", "2", "--log-every", "1", "--device", "cpu"]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, *args, "--data", str(text), "--out", str(tmp_path / "one")], check=True, env=env)
    subprocess.run([torchrun, "--nproc_per_node", "2", *args, "--data", windows, "--fsdp", "--out",
                    str(tmp_path / "two")], check=True, env=env)  # fmt: skip
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one[0]) == 4 and close(two[0], one[0]) and close(two[1], one[1])
    assert (tmp_path / "two" / "checkpoint" / "tokenizer.json").is_file()
    state = json.loads((tmp_path / "two" / "checkpoint" / "trainer_state.json").read_text())
    assert state["train_config"]["fsdp"] and state["world_size"] == 2


class Replicated(Trainer):
    SHARDABLE = False  # as the vision stages


def train_replicated(out, cfg, rank=0):
    from minimistral.distributed import is_sharded

    torch.manual_seed(rank)
    trainer = Replicated(minimistral.Ministral3(CFG), cfg, windows(40, 0), out, val_data=windows(8, 1), device="cpu")
    assert not trainer.sharded and not is_sharded(trainer.model)
    trainer.fit()


def test_a_stage_that_cannot_be_sharded_trains_replicated_under_fsdp(one, tmp_path):
    spawn(2, train_replicated, str(tmp_path), FSDP)
    assert close(losses(tmp_path)[0], losses(one)[0])


def test_fsdp2_with_activation_checkpointing_trains_the_same_run(one, tmp_path):
    """Each sharded block gathered again for its recomputation in backward: the steps do not change."""
    run(tmp_path, 2, cfg=dataclasses.replace(FSDP, activation_checkpointing=True))
    assert close(losses(tmp_path)[0], losses(one)[0]) and close(losses(tmp_path)[1], losses(one)[1])
    w1, w2 = weights(one), weights(tmp_path)
    assert all(torch.allclose(w2[k], w1[k], rtol=0, atol=1e-5) for k in w1)


class Responses:
    """SFT-like examples of different lengths, each learned on its last part only (``train.pad_right``)."""

    def __init__(self, n=24):
        g = torch.Generator().manual_seed(3)
        lengths = torch.randint(6, 17, (n,), generator=g).tolist()
        self.rows = [((torch.arange(k) * 5 + i) % 97, [t >= k // 2 for t in range(k)]) for i, k in enumerate(lengths)]

    def __len__(self):
        return len(self.rows)

    def batch(self, indices):
        from minimistral.train import pad_right

        return pad_right([(ids.tolist(), mask) for ids, mask in (self.rows[int(i)] for i in indices)], pad_id=0)


def sft_job(out, cfg, rank=0):
    """SFT with the response loss's KL from a sharded teacher, on batches whose ranks hold unequal token counts."""
    from minimistral.distill import ResponseDistillLoss, response_loss
    from minimistral.distributed import is_sharded, rank_world

    torch.manual_seed(0)
    teacher = minimistral.Ministral3(dataclasses.replace(CFG, hidden_size=48))
    loss = ResponseDistillLoss(teacher)
    student = minimistral.Ministral3(CFG)
    Trainer(student, cfg, Responses(), out, val_data=Responses(8), loss_fn=loss, val_loss_fn=response_loss,
            device="cpu").fit()  # fmt: skip
    assert is_sharded(teacher) == (cfg.fsdp and rank_world()[1] > 1)


def test_fsdp2_sft_on_responses_matches_one_process(tmp_path):
    spawn(1, sft_job, str(tmp_path / "one"), STEPS)
    spawn(2, sft_job, str(tmp_path / "two"), FSDP)
    (train_1, val_1), (train_2, val_2) = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(train_1) == 5 and close(train_2, train_1) and close(val_2, val_1)


# ----------------------------------------------------------------------------- post-training and vision
def torchrun_path():
    return shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")


needs_torchrun = pytest.mark.skipif(not os.path.exists(torchrun_path()), reason="no torchrun")


def cli(out, *args, world=1):
    """``python -m minimistral ARGS --out OUT`` in one process, or under ``torchrun --nproc_per_node world``."""
    launcher = [sys.executable] if world == 1 else [torchrun_path(), "--nproc_per_node", str(world)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    subprocess.run([*launcher, "-m", "minimistral", *args, "--device", "cpu", "--out", str(out)], check=True, env=env)
    return out


def metric_rows(out, key):
    return [m for m in read_metrics(out) if key in m]


@needs_torchrun
def test_posttrain_verbs_under_torchrun(tmp_path):
    """``minimistral posttrain sft`` under 2 processes is the run of 1 process (KL from the teacher on responses
    of different lengths); GRPO from it runs under torchrun too, each rank sampling its own prompts' rollouts."""
    dirs = tiny_checkpoints(tmp_path, teacher=2, child=1)
    sft = ["posttrain", "sft", "--scale", "ci", "--checkpoint", str(dirs["child"]), "--teacher", str(dirs["teacher"])]
    one, two = cli(tmp_path / "one", *sft), cli(tmp_path / "two", *sft, world=2)
    (train_1, val_1), (train_2, val_2) = losses(one), losses(two)
    assert len(train_1) == 2 and close(train_2, train_1) and close(val_2, val_1)
    assert [r["kl"] for r in metric_rows(two, "kl")] == pytest.approx([r["kl"] for r in metric_rows(one, "kl")])
    rl = cli(tmp_path / "rl", "posttrain", "stem-rl", "--scale", "ci", "--checkpoint", str(two / "checkpoint"), world=2)
    rewards = metric_rows(rl, "reward")
    assert [r["step"] for r in rewards] == [1, 2] and all(0 <= r["reward"] <= 1 for r in rewards)
    state = json.loads((rl / "checkpoint" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and (rl / "checkpoint" / "tokenizer.json").is_file()


@needs_torchrun
def test_vision_verb_under_torchrun_matches_one_process(tmp_path):
    """A child's projector (``minimistral vision``) under 2 processes is the run of 1 process, though only rank 0
    holds the batch's text window (``WithText``): each part of the loss is weighted by its own tokens."""
    from minimistral.vision.study import see_parent

    dirs = tiny_checkpoints(tmp_path, parent=2, child=1)
    seeing = see_parent(dirs["parent"], tmp_path, "ci", device="cpu")
    args = ["vision", "--scale", "ci", "--checkpoint", str(dirs["child"]), "--teacher", str(seeing)]
    one, two = cli(tmp_path / "one", *args), cli(tmp_path / "two", *args, world=2)
    (train_1, val_1), (train_2, val_2) = losses(one), losses(two)
    assert len(train_1) >= 1 and close(train_2, train_1) and close(val_2, val_1)  # (logged every 10 steps)
    for part in ("answers", "text"):
        assert close([r[part] for r in metric_rows(two, part)], [r[part] for r in metric_rows(one, part)]), part
    w1, w2 = weights(one), weights(two)
    assert all(torch.allclose(w2[k], w1[k], rtol=0, atol=1e-5) for k in w1)
    sharded = cli(tmp_path / "sharded", *args, "--fsdp", world=2)  # the child and its teacher sharded
    assert close(losses(sharded)[0], train_1) and close(losses(sharded)[1], val_1)
    w3 = weights(sharded)
    assert all(torch.allclose(w3[k], w1[k], rtol=0, atol=1e-5) for k in w1)
    assert all(torch.equal(w3[k], w1[k]) for k in w1 if k.startswith("vision_tower."))  # copied, frozen


def _even(i, rollout):
    """A reward a random policy can climb: the share of even ids in the response."""
    return sum(t % 2 == 0 for t in rollout.ids) / max(1, len(rollout.ids))


class _Recorded:
    """``_even``, each reward and response length also appended to a file (one per rank)."""

    def __init__(self, file):
        self.file = file

    def __call__(self, i, rollout):
        reward = _even(i, rollout)
        with open(self.file, "a") as fh:
            fh.write(f"{reward!r} {len(rollout.ids)}\n")
        return reward


def grpo_job(out, max_steps=None, fsdp=False, rank=0):
    """GRPO on a random policy, rank 1 starting from other weights; each rank saves the weights it ends with
    (gathered from the shards under FSDP2)."""
    from safetensors.torch import save_file

    from minimistral.distributed import full, is_sharded
    from minimistral.posttrain.grpo import GRPOTrainer, Prompts, RLConfig

    torch.manual_seed(0 if fsdp else rank)  # (FSDP2 shards every rank's own copy: they must agree)
    prompts = Prompts([[1, 3, 10 + i, 4] + [5] * (i % 3) for i in range(8)])  # of 3 lengths: 1-3 batches a rank
    cfg = TrainConfig(steps=3, batch_size=4, lr=1e-2, min_lr=1e-2, warmup_steps=1, ckpt_every=1, log_every=1,
                      fsdp=fsdp)  # fmt: skip
    rl = RLConfig(group_size=4, max_new_tokens=6, inner_steps=2)
    reward = _Recorded(f"{out}/rewards{rank}.txt")
    trainer = GRPOTrainer(minimistral.Ministral3(CFG), cfg, rl, prompts, reward, out, device="cpu")
    trainer.fit(max_steps)
    assert is_sharded(trainer.model) == fsdp
    state = {k: full(v).contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(state, f"{out}/rank{rank}.safetensors")


def test_grpo_under_two_processes_is_the_run_of_one_and_resumes_bitwise(tmp_path):
    """Every rollout is seeded by the step and its row in the global batch, so 2 processes sample the rollouts
    of 1 (each rank half the prompts), score the same rewards and take the same steps (losses within 1e-5)."""
    spawn(2, grpo_job, str(tmp_path / "a"))
    spawn(1, grpo_job, str(tmp_path / "one"))
    scored = [(tmp_path / d / f"rewards{r}.txt").read_text().splitlines() for d, r in (("one", 0), ("a", 0), ("a", 1))]
    halves = [line for step in range(3) for rank in scored[1:] for line in rank[8 * step : 8 * step + 8]]
    assert halves == scored[0] and len(halves) == 48  # every rollout's reward and length, step by step
    one = metric_rows(tmp_path / "one", "reward")
    two = metric_rows(tmp_path / "a", "reward")
    for key in ("reward", "length", "truncated", "no_signal"):
        assert [r[key] for r in two] == pytest.approx([r[key] for r in one], abs=1e-6), key  # (fp32 means)
    assert close([r["loss"] for r in two], [r["loss"] for r in one])
    w1 = weights(tmp_path / "one")
    assert all(torch.allclose(v, w1[k], rtol=0, atol=1e-5) for k, v in weights(tmp_path / "a").items())
    ranks = [load_file(tmp_path / "a" / f"rank{r}.safetensors") for r in (0, 1)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])  # the same summed gradients on each
    assert all(torch.equal(ranks[0][k], v) for k, v in weights(tmp_path / "a").items())
    rows = metric_rows(tmp_path / "a", "reward")
    assert [r["step"] for r in rows] == [1, 2, 3] and all(0 <= r["reward"] <= 1 for r in rows)  # written once
    seen = [[line.split() for line in (tmp_path / "a" / f"rewards{r}.txt").read_text().splitlines()] for r in (0, 1)]
    for step, row in enumerate(rows):  # logged: means over all 16 rollouts of the step, whatever their lengths
        mine = [x for rank in seen for x in rank[8 * step : 8 * step + 8]]
        assert row["reward"] == pytest.approx(sum(float(x[0]) for x in mine) / 16, abs=1e-6)
        assert row["length"] == pytest.approx(sum(int(x[1]) for x in mine) / 16, abs=1e-6)
    spawn(2, grpo_job, str(tmp_path / "b"), 1)  # stopped after the first iteration, then resumed
    spawn(2, grpo_job, str(tmp_path / "b"))
    resumed = load_file(tmp_path / "b" / "rank0.safetensors")
    assert all(torch.equal(resumed[k], ranks[0][k]) for k in resumed)
    assert [r["reward"] for r in metric_rows(tmp_path / "b", "reward")] == [r["reward"] for r in rows]


def test_grpo_under_fsdp2_samples_on_whole_weights_and_trains_as_replicated(tmp_path):
    """Under FSDP2 each rank gathers the whole policy once per iteration and decodes alone (its rollouts end at
    their own steps, so its number of forwards differs from the other rank's), then trains sharded: the run of
    the replicated engine, the same rollouts and rewards, weights within 1e-5."""
    spawn(2, grpo_job, str(tmp_path / "replicated"))
    spawn(2, grpo_job, str(tmp_path / "sharded"), None, True)
    rows = [metric_rows(tmp_path / name, "reward") for name in ("replicated", "sharded")]
    assert [r["reward"] for r in rows[1]] == [r["reward"] for r in rows[0]] and len(rows[0]) == 3
    assert close([r["loss"] for r in rows[1]], [r["loss"] for r in rows[0]], rel=1e-4)
    a, b = (load_file(tmp_path / name / "rank0.safetensors") for name in ("replicated", "sharded"))
    assert all(torch.allclose(b[k], a[k], rtol=0, atol=1e-5) for k in a)
    assert all(torch.equal(b[k], v) for k, v in weights(tmp_path / "sharded").items())


class Brevity:
    """A judge for the ODPO test: prefers the shorter answer (an algorithm, so every rank judges alike)."""

    temperature = 1.0

    def to(self, device):
        return self

    def prob(self, pairs):
        return torch.sigmoid(torch.tensor([float(len(p.b) - len(p.a)) for p in pairs]) / 4)


def odpo_job(out, tokenizer_dir, fsdp=False, rank=0):
    from safetensors.torch import save_file

    from minimistral.data.tokenizer import load_tokenizer
    from minimistral.distributed import full
    from minimistral.posttrain.grpo import Prompts
    from minimistral.posttrain.odpo import ODPOConfig, ODPOTrainer

    torch.manual_seed(0)
    policy, reference = minimistral.Ministral3(CFG), minimistral.Ministral3(CFG)
    reference.load_state_dict(policy.state_dict())
    texts = [f"Say something {i}" for i in range(8)]
    prompts = Prompts([[1, 3, 20 + i, 4] for i in range(8)])
    cfg = TrainConfig(steps=2, batch_size=4, lr=3e-3, min_lr=3e-3, warmup_steps=1, ckpt_every=1, log_every=1,
                      fsdp=fsdp)  # fmt: skip
    trainer = ODPOTrainer(policy, cfg, ODPOConfig(max_new_tokens=6, beta=0.5), prompts, texts, Brevity(),
                          load_tokenizer(tokenizer_dir), out, reference, device="cpu")  # fmt: skip
    trainer.fit()
    state = {k: full(v).contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(state, f"{out}/rank{rank}.safetensors")


def test_odpo_under_two_processes_is_the_run_of_one(tmp_path):
    from minimistral.data.corpus import build_corpus

    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.json").write_bytes(build_corpus().tokenizer_path.read_bytes())
    spawn(2, odpo_job, str(tmp_path / "run"), str(tmp_path / "tok"))
    ranks = [load_file(tmp_path / "run" / f"rank{r}.safetensors") for r in (0, 1)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    rows = metric_rows(tmp_path / "run", "margin")
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    spawn(1, odpo_job, str(tmp_path / "one"), str(tmp_path / "tok"))  # the same pairs, judged alike: one run
    one = metric_rows(tmp_path / "one", "margin")
    assert [r["length"] for r in rows] == pytest.approx([r["length"] for r in one], abs=1e-6)
    for key in ("loss", "margin", "confidence"):
        assert close([r[key] for r in rows], [r[key] for r in one]), key
    spawn(2, odpo_job, str(tmp_path / "sharded"), str(tmp_path / "tok"), True)  # FSDP2: the replicated run
    sharded = metric_rows(tmp_path / "sharded", "margin")
    assert close([r["loss"] for r in sharded], [r["loss"] for r in rows], rel=1e-4)
    assert [r["length"] for r in sharded] == [r["length"] for r in rows]  # the same responses
    b = load_file(tmp_path / "sharded" / "rank0.safetensors")
    assert all(torch.allclose(b[k], ranks[0][k], rtol=0, atol=1e-5) for k in b)


def sharded_load_job(path, out, rank=0):
    """Each rank loads ``path`` sharded and writes what the shards gather to, and how much it held itself."""
    from safetensors.torch import save_file

    from minimistral.arch.hub import load_sharded
    from minimistral.distributed import full, is_sharded

    model = load_sharded(path, torch.float32, "cpu")
    assert is_sharded(model)
    whole = {name: full(p).contiguous() for name, p in model.named_parameters()}
    local = sum(p.to_local().numel() for p in model.parameters())
    save_file(whole | {"local_numel": torch.tensor(local)}, f"{out}/rank{rank}.safetensors")


@pytest.mark.parametrize("kind", ["tied", "vision"])
def test_a_checkpoint_loads_sharded_without_any_rank_holding_it_whole(tmp_path, hf_dir, kind):
    """``hub.load_sharded`` (``distill --fsdp`` on real checkpoints): built on the meta device, sharded, each rank
    reading its rows of each tensor; the shards gather to ``from_pretrained``'s weights bitwise."""
    pytest.importorskip("transformers")
    from conftest import hf_vision_model

    from minimistral.arch.hub import from_pretrained

    if kind == "vision":
        path = tmp_path / "ckpt"
        hf_vision_model().save_pretrained(path)
    else:
        _, path = hf_dir("ministral3", tie_word_embeddings=True)
    spawn(2, sharded_load_job, str(path), str(tmp_path))
    reference = {k: v for k, v in from_pretrained(path).named_parameters()}
    total = sum(v.numel() for v in reference.values())
    for r in (0, 1):
        got = load_file(tmp_path / f"rank{r}.safetensors")
        assert int(got.pop("local_numel")) <= total // 2 + 4096  # its shard: about half
        assert got.keys() == reference.keys() and all(torch.equal(got[k], reference[k]) for k in got)


def reproduce_job(rank=0):
    from minimistral.cli import build_parser, cmd_reproduce

    with pytest.raises(ValueError, match=r"reproduce runs in one process.*posttrain"):
        cmd_reproduce(build_parser().parse_args(["reproduce", "--scale", "ci"]))


def test_reproduce_under_torchrun_names_the_verbs_that_run_there():
    spawn(2, reproduce_job)
