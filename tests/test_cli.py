"""The command line: params, generate (Tekken and tokenizer.json), convert."""

import gc
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import hf_model, hf_vision_model

import minimistral
from minimistral.cli import main
from minimistral.data.tokenizer import load_tokenizer


def test_params_prints_the_family(capsys):
    assert main(["params"]) == 0
    out = capsys.readouterr().out
    for count in ("3,429,006,336", "8,489,553,920", "13,506,073,600", "23,572,403,200"):
        assert count in out
    assert "403,305,472" in out  # the Pixtral encoder
    for projector in ("16,778,240", "25,166,848", "35,652,608"):
        assert projector in out
    assert f"{3_429_006_336 + 403_305_472 + 16_778_240:,}" in out  # 3B with vision


def tekken_file() -> Path:
    mc = pytest.importorskip("mistral_common")
    return Path(mc.__file__).parent / "data" / "tekken_240911.json"


def test_generate_with_real_tekken(tmp_path, capsys):
    hf = hf_model("ministral3", vocab_size=131072, hidden_size=32, intermediate_size=48, num_hidden_layers=1)
    hf.save_pretrained(tmp_path)
    shutil.copy(tekken_file(), tmp_path / "tekken.json")
    argv = ["generate", "--checkpoint", str(tmp_path), "--prompt", "The capital of France", "--max-new-tokens", "8"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert text.startswith("The capital of France")
    # the CLI's continuation is the model's greedy continuation, decoded
    tok = load_tokenizer(tmp_path)
    ids = torch.tensor([tok.encode("The capital of France")])
    assert ids[0, 0].item() == 1  # <s> at Tekken's id
    new = minimistral.generate(minimistral.from_pretrained(tmp_path), ids, 8, eos_token_id=tok.eos_id)[
        0, ids.shape[1] :
    ]
    assert text.rstrip("\n") == "The capital of France" + tok.decode([t for t in new.tolist() if t != tok.eos_id])
    # several samples: the prompt read once and continued 3 times, each printed under its header
    assert main([*argv, "--temperature", "1", "--seed", "0", "--num-samples", "3"]) == 0
    samples = capsys.readouterr().out.split("--- sample ")[1:]
    assert [s.split("\n")[0] for s in samples] == ["1 of 3", "2 of 3", "3 of 3"]
    assert all(s.split("\n")[1].startswith("The capital of France") for s in samples)
    assert main([*argv, "--num-samples", "2"]) == 2  # greedy: one continuation only
    assert "--temperature" in capsys.readouterr().err


def test_generate_with_images(tmp_path, capsys):
    """Two images before the prompt: the CLI's text is the model's greedy continuation of the image prompt."""
    import numpy as np
    from PIL import Image

    from minimistral.vision.images import image_prompt, read_images

    hf = hf_vision_model(vocab_size=131072, hidden_size=32, intermediate_size=48, num_hidden_layers=1)
    hf.save_pretrained(tmp_path / "ckpt")
    shutil.copy(tekken_file(), tmp_path / "ckpt" / "tekken.json")
    rng = np.random.default_rng(0)
    for name, shape in (("a.png", (20, 30, 3)), ("b.png", (9, 9))):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(tmp_path / name)
    images = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    argv = ["generate", "--checkpoint", str(tmp_path / "ckpt"), "--prompt", "Two images", "--max-new-tokens", "6"]
    assert main([*argv, "--image", images[0], "--image", images[1]]) == 0
    text = capsys.readouterr().out.rstrip("\n")
    model, tok = minimistral.from_pretrained(tmp_path / "ckpt"), load_tokenizer(tmp_path / "ckpt")
    pixels, sizes = read_images(images, model.vision_config)
    ids = torch.tensor([image_prompt(tok.encode("Two images", bos=False), sizes, model.vision_config, tok.bos_id)])
    assert ids[0].tolist().count(10) == 3 * 4 + 2 * 2  # 20x30 px -> 24x32 -> 3x4 tokens; 9x9 -> 16x16 -> 2x2
    new = minimistral.generate(model, ids, 6, eos_token_id=tok.eos_id, pixel_values=pixels, image_sizes=sizes)
    assert text == "Two images" + tok.decode([t for t in new[0, ids.shape[1] :].tolist() if t != tok.eos_id])


def test_generate_image_errors_are_one_line(tmp_path, capsys):
    from PIL import Image

    hf_vision_model().save_pretrained(tmp_path / "vl")
    hf_model("ministral3").save_pretrained(tmp_path / "text")
    Image.new("RGB", (16, 16)).save(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes((tmp_path / "ok.png").read_bytes()[:40])
    Image.new("I;16", (16, 16)).save(tmp_path / "deep.png")
    for ckpt, image, message in [
        ("text", "ok.png", "text-only"),
        ("vl", "broken.png", "broken.png: not a readable image"),
        ("vl", "deep.png", "unsupported image mode 'I;16'"),
        ("vl", "missing.png", "missing.png: no such image file"),
    ]:
        argv = ["generate", "--checkpoint", str(tmp_path / ckpt), "--prompt", "x", "--image", str(tmp_path / image)]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_generate_with_tokenizer_json(tmp_path, capsys):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {chr(97 + i): 3 + i for i in range(26)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.save(str(tmp_path / "tokenizer.json"))
    hf_model("ministral3", vocab_size=29).save_pretrained(tmp_path)
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(tmp_path),
                "--prompt",
                "abc",
                "--max-new-tokens",
                "5",
                "--temperature",
                "0.8",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith("abc")


def test_generate_past_the_models_positions_says_so(tmp_path, capsys):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {chr(97 + i): 3 + i for i in range(26)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.save(str(tmp_path / "tokenizer.json"))
    hf_model("ministral3", vocab_size=29, max_position_embeddings=12).save_pretrained(tmp_path)
    argv = ["generate", "--checkpoint", str(tmp_path), "--prompt", "abc", "--max-new-tokens"]
    assert main([*argv, "8"]) == 0  # <s> + 3 + 8 = 12 positions: inside
    assert "note" not in capsys.readouterr().err
    assert main([*argv, "9"]) == 0  # 13: generated, and said
    err = capsys.readouterr().err
    assert "4 tokens + --max-new-tokens 9 = 13 positions, past this model's 12" in err


def test_an_error_under_a_progress_bar_gets_a_line_of_its_own(monkeypatch, capsys):
    from tqdm import tqdm

    import minimistral.cli

    def failing(args):  # a bar held by a name (a loop's own bar is closed as the loop unwinds)
        bar = tqdm(total=10, desc="work", disable=False)  # on even where TQDM_DISABLE is set (CI)
        bar.update(3)
        raise ValueError("row 3 is bad")

    monkeypatch.setattr(minimistral.cli, "cmd_params", failing)
    assert main(["params"]) == 2
    err = capsys.readouterr().err
    assert "work:  30%" in err and "\nminimistral: error: row 3 is bad\n" in err  # the bar's line ended first


def test_generate_without_tokenizer_is_a_clear_error(tmp_path, capsys):
    hf_model("ministral3").save_pretrained(tmp_path)
    assert main(["generate", "--checkpoint", str(tmp_path), "--prompt", "x"]) == 2
    assert "no tekken.json or tokenizer.json" in capsys.readouterr().err


def test_convert_changes_dtype(tmp_path):
    hf_model("ministral3").save_pretrained(tmp_path / "a")
    assert main(["convert", "--checkpoint", str(tmp_path / "a"), "--out", str(tmp_path / "b"), "--dtype", "bf16"]) == 0
    assert minimistral.from_pretrained(tmp_path / "b").lm_head.weight.dtype == torch.bfloat16


def test_cascade_bad_input_is_a_clear_error(tmp_path, capsys):
    assert main(["cascade", "--scale", "ci", "--restart-from", "tiny-5b-short", "--out", str(tmp_path)]) == 2
    assert "unknown stage 'tiny-5b-short'" in capsys.readouterr().err
    assert main(["cascade", "--scale", "ci", "--parent", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no parent checkpoint" in err and "minimistral pretrain --scale ci" in err


def _letters(d: Path) -> Path:
    """A checkpoint directory with a letter-level tokenizer.json (ids 3-28 = a-z)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {chr(97 + i): 3 + i for i in range(26)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    d.mkdir(parents=True, exist_ok=True)
    tok.save(str(d / "tokenizer.json"))
    return d


def test_tokenize_writes_the_windows_distill_reads_and_names_a_mismatch(tmp_path, capsys):
    from minimistral.data.corpus import load_windows, text_windows

    ckpt = _letters(tmp_path / "ckpt")
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join("abcdefghij"[i % 7 :] * 3 for i in range(40)))
    out = tmp_path / "w.safetensors"
    argv = ["tokenize", "--checkpoint", str(ckpt), "--data", str(text), "--tokens", "400", "--seq-len", "15"]
    assert main([*argv, "--out", str(out)]) == 0
    assert "windows of 16 tokens" in capsys.readouterr().out
    tok = load_tokenizer(ckpt)
    windows = load_windows(out, tok, 16)
    assert torch.equal(windows, text_windows(tok, str(text), 400, 16)) and windows.shape == (25, 16)
    assert windows[0, 0] == 1 and (windows[1:, 0] != 1).all()  # a file is one document: one <s>
    assert torch.equal(text_windows(tok, str(out), 160, 16), windows[:10])  # --tokens caps it
    with pytest.raises(ValueError, match="windows of 16 tokens, this run needs 33"):
        text_windows(tok, str(out), 400, 33)
    other = _letters(tmp_path / "other") / "tokenizer.json"
    other.write_text(other.read_text().replace('"<unk>"', '"<UNK>"'))  # another file: another tokenizer
    with pytest.raises(ValueError, match="encoded with another tokenizer"):
        text_windows(load_tokenizer(other.parent), str(out), 400, 16)
    (tmp_path / "bad.txt").write_bytes(b"abc\xff\xfe")
    assert main([*argv[:3], "--data", str(tmp_path / "bad.txt"), "--out", str(out)]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "w.pt")]) == 2
    assert "*.safetensors" in capsys.readouterr().err


def _resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads resident memory from /proc")
def test_a_windows_file_is_memory_mapped_not_read(tmp_path):
    from minimistral.data.corpus import load_windows, save_windows
    from minimistral.train import Windows

    tok = load_tokenizer(_letters(tmp_path / "ckpt"))
    out = tmp_path / "big.safetensors"
    windows = torch.arange(16_384 * 1024, dtype=torch.int32).view(16_384, 1024) % 7  # 64 MB of int32
    save_windows(windows, out, tok, "test")
    expected = windows[[3, 16_000]].long()
    del windows
    gc.collect()
    before = _resident_bytes()
    mapped = load_windows(out, tok, 1024)
    batch = Windows(mapped).batch(torch.tensor([3, 16_000]))  # two rows read, as int64
    grown = _resident_bytes() - before
    assert mapped.shape == (16_384, 1024) and mapped.dtype == torch.int32
    assert batch.dtype == torch.long and torch.equal(batch, expected)
    assert grown < 16 * 2**20, f"loading grew resident memory by {grown / 2**20:.0f} MB: the file was read whole"
    (tmp_path / "other.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(ValueError, match=r"other\.safetensors: not a windows file"):
        load_windows(tmp_path / "other.safetensors", tok, 1024)


def test_stage_verbs_name_what_is_missing(tmp_path, capsys):
    assert main(["posttrain", "sft", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "posttrain sft: --teacher is required" in capsys.readouterr().err
    argv = ["posttrain", "stem-rl", "--checkpoint", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "no config.json" in capsys.readouterr().err
    assert main(["posttrain", "pwrm", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert main(["vision", "--checkpoint", str(tmp_path), "--teacher", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_posttrain_stages_on_a_tekken_checkpoint_carry_its_tokenizer(tmp_path, capsys):
    """A real-format checkpoint (transformers' files, Tekken): SFT then STEM RL, each checkpoint with tekken.json."""
    hf_model(
        "ministral3", vocab_size=131072, hidden_size=32, intermediate_size=48, num_hidden_layers=1
    ).save_pretrained(tmp_path / "base")
    shutil.copy(tekken_file(), tmp_path / "base" / "tekken.json")
    base, sft, rl = (str(tmp_path / name) for name in ("base", "sft", "rl"))
    args = ["--scale", "ci", "--device", "cpu"]
    assert main(["posttrain", "sft", "--checkpoint", base, "--teacher", base, "--out", sft, *args]) == 0
    assert main(["posttrain", "stem-rl", "--checkpoint", sft + "/checkpoint", "--out", rl, *args]) == 0
    for out in (sft, rl):
        assert (Path(out) / "checkpoint" / "tekken.json").read_bytes() == tekken_file().read_bytes()
    assert f"wrote {rl}/checkpoint" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "--checkpoint", "c", "--prompt", "x", "--device", "gpu"], "--device: 'gpu' is not a device"),
        (["distill", "--student", "s", "--teacher", "t", "--out", "o", "--seq-len", "0"], "--seq-len: must be a"),
        (["distill", "--student", "s", "--teacher", "t", "--out", "o", "--batch-size", "-2"], "--batch-size: must"),
        (["tokenize", "--checkpoint", "c", "--data", "d", "--out", "o.safetensors", "--tokens", "-5"], "--tokens"),
        (["prune", "--checkpoint", "c", "--out", "o", "--layers", "0"], "argument --layers: must be a positive"),
        (["convert", "--checkpoint", "c", "--out", "o", "--max-shard-size-mb", "-1"], "--max-shard-size-mb"),
    ],
)  # fmt: skip
def test_bad_numbers_and_devices_are_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_a_device_this_machine_lacks_is_named(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--checkpoint", "c", "--prompt", "x", "--device", "cuda"])
    assert "argument --device: cuda: not available" in capsys.readouterr().err


def test_out_is_checked_before_any_work_and_never_overwrites_the_source(tmp_path, capsys):
    from conftest import tiny_checkpoints

    ckpt = tiny_checkpoints(tmp_path, src=2)["src"]
    before = (ckpt / "model.safetensors").read_bytes()
    (tmp_path / "file.txt").write_text("keep me")
    prune = ["prune", "--checkpoint", str(ckpt), "--out"]
    cases = [
        ([*prune, str(ckpt), "--layers", "1"], "the same directory as --checkpoint"),
        (["convert", "--checkpoint", str(ckpt), "--out", str(ckpt)], "the same directory as --checkpoint"),
        ([*prune, str(tmp_path / "file.txt")], "exists and is not a directory"),
        ([*prune, str(tmp_path / "file.txt" / "p")], "is a file, not a directory"),
        ([*prune, str(tmp_path / "p"), "--layers", "9"], "--layers 9: the checkpoint has 2"),
        (["tokenize", "--checkpoint", str(ckpt), "--data", "milton", "--out", str(ckpt / "model.safetensors")],
         "exists and is not a windows file"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert (ckpt / "model.safetensors").read_bytes() == before and (tmp_path / "file.txt").read_text() == "keep me"
    (tmp_path / "run").mkdir()
    shutil.copytree(ckpt, tmp_path / "run" / "checkpoint")
    assert main(["generate", "--checkpoint", str(tmp_path / "run"), "--prompt", "x"]) == 2  # a run, not its model
    assert f"its model is in {tmp_path / 'run' / 'checkpoint'}" in capsys.readouterr().err


def test_distill_refuses_a_teacher_with_another_tokenizer_and_a_vision_step_a_text_teacher(tmp_path, capsys):
    from conftest import tiny_checkpoints

    dirs = tiny_checkpoints(tmp_path, student=1, teacher=2)
    file = dirs["teacher"] / "tokenizer.json"
    raw = json.loads(file.read_text())
    ids = load_tokenizer(dirs["student"]).encode("To be, or not to be", bos=False)[:2]
    names = {v: k for k, v in raw["model"]["vocab"].items()}
    raw["model"]["vocab"][names[ids[0]]], raw["model"]["vocab"][names[ids[1]]] = ids[1], ids[0]  # two ids swapped
    file.write_text(json.dumps(raw))
    student, teacher = str(dirs["student"]), str(dirs["teacher"])
    argv = ["distill", "--student", student, "--teacher", teacher, "--out", str(tmp_path / "o"), "--seq-len", "16"]
    assert main([*argv, "--tokens", "400", "--steps", "1", "--device", "cpu"]) == 2
    assert "its tokenizer encodes text differently from the student's" in capsys.readouterr().err
    argv = ["posttrain", "sft", "--checkpoint", student, "--teacher", teacher, "--out", str(tmp_path / "s")]
    assert main([*argv, "--scale", "ci"]) == 2
    assert "its tokenizer encodes text differently from the student's" in capsys.readouterr().err
    argv = ["posttrain", "odpo", "--checkpoint", student, "--judge", student, "--out", str(tmp_path / "d")]
    assert main([*argv, "--scale", "ci"]) == 2
    assert "not a pairwise reward model from `posttrain pwrm`" in capsys.readouterr().err
    argv = ["vision", "--checkpoint", student, "--teacher", student, "--out", str(tmp_path / "v"), "--scale", "ci"]
    assert main(argv) == 2
    assert "a text-only checkpoint; the teacher must read images" in capsys.readouterr().err


def test_a_damaged_checkpoint_is_named_when_a_run_resumes(tmp_path, capsys):
    from conftest import tiny_checkpoints

    student = str(tiny_checkpoints(tmp_path, student=1)["student"])
    argv = ["distill", "--student", student, "--teacher", student, "--out", str(tmp_path / "o"), "--seq-len", "16",
            "--tokens", "800", "--steps", "2", "--max-steps", "1", "--batch-size", "2", "--device", "cpu",
            "--teacher-dtype", "fp32"]  # fmt: skip
    assert main(argv) == 0
    other = str(tiny_checkpoints(tmp_path, other=2)["other"])
    assert main([*argv[:4], other, *argv[5:]]) == 2  # the same run, another teacher
    assert "inputs.json: cannot resume: --teacher was" in capsys.readouterr().err
    state = tmp_path / "o" / "checkpoint" / "trainer_state.json"
    good = state.read_text()
    state.write_text(good[:-20])
    assert main(argv) == 2
    assert f"{state}: not readable JSON" in capsys.readouterr().err
    state.write_text(good)
    optimizer = tmp_path / "o" / "checkpoint" / "optimizer.safetensors"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    assert main(argv) == 2
    assert f"{optimizer}: unreadable" in capsys.readouterr().err


TRAIN_UNTIL_KILLED = """
import sys, torch
import minimistral
from minimistral.cli import guarded
from minimistral.train import TrainConfig, Trainer, Windows

torch.manual_seed(0)
cfg = minimistral.get_config("ministral-3-3b").replace(
    vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=8)
data = Windows(torch.randint(0, 97, (64, 17)))
train = TrainConfig(steps=100_000, batch_size=4, lr=1e-3, warmup_steps=1, ckpt_every=10**6, log_every=1)
sys.exit(guarded(lambda: Trainer(minimistral.Ministral3(cfg), train, data, sys.argv[1], device="cpu").fit()))
"""


def test_sigterm_stops_training_with_a_checkpoint_and_exit_130(tmp_path):
    """``kill`` (SIGTERM, as Slurm and torchrun send) during a command's training: the engine writes its
    checkpoint and the command exits 130, as after Ctrl-C (resuming from it: ``test_train``)."""
    import signal
    import subprocess
    import sys
    import time

    from minimistral.train import read_metrics

    out = tmp_path / "run"
    env = os.environ | {"OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", TRAIN_UNTIL_KILLED, str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.time() + 120
    while not any("loss" in r for r in read_metrics(out)) and proc.poll() is None:
        assert time.time() < deadline, "no training step logged in 120 s"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output
    state = json.loads((out / "checkpoint" / "trainer_state.json").read_text())
    assert f"interrupted: checkpoint at step {state['step']}" in output and state["step"] >= 1
