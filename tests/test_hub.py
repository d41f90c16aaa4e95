"""HF-format directories: load, save, round trips, shards, mistral3, and one-line errors for bad input."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import hf_model, hf_vision_model, transformers
from safetensors.torch import load_file, save_file

import minimistral
from minimistral import CheckpointError
from minimistral.cli import main as cli_main


def logits(model, ids):
    with torch.no_grad():
        out = model(ids)
    return out if isinstance(out, torch.Tensor) else out.logits


IDS = torch.randint(0, 256, (2, 50), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "kind,kw", [("ministral3", {}), ("ministral3", dict(tie_word_embeddings=True)), ("mistral", dict(yarn=False))]
)
def test_load_transformers_directory(hf_dir, kind, kw):
    hf, path = hf_dir(kind, **kw)
    ours = minimistral.from_pretrained(path)
    assert (logits(ours, IDS) - logits(hf, IDS)).abs().max() < 1e-4
    if kw.get("tie_word_embeddings"):
        assert ours.lm_head.weight is ours.model.embed_tokens.weight


@pytest.mark.parametrize(
    "kind,kw", [("ministral3", {}), ("ministral3", dict(tie_word_embeddings=True)), ("mistral", dict(yarn=False))]
)
def test_save_then_transformers_loads_same_logits(hf_dir, tmp_path, kind, kw):
    _, path = hf_dir(kind, **kw)
    ours = minimistral.from_pretrained(path)
    out = minimistral.save_pretrained(ours, tmp_path / "ours")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(theirs).__name__ == ("Ministral3ForCausalLM" if kind == "ministral3" else "MistralForCausalLM")
    assert (logits(theirs, IDS) - logits(ours, IDS)).abs().max() < 1e-4


def test_save_load_round_trip_is_exact(hf_dir, tmp_path):
    _, path = hf_dir()
    a = minimistral.from_pretrained(path)
    b = minimistral.from_pretrained(minimistral.save_pretrained(a, tmp_path / "rt"))
    assert a.config == b.config
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert torch.equal(logits(a, IDS), logits(b, IDS))


def test_our_shards_round_trip(hf_dir, tmp_path):
    _, path = hf_dir()
    a = minimistral.from_pretrained(path)
    out = minimistral.save_pretrained(a, tmp_path / "sharded", max_shard_size=60_000)
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) > 2 and (out / "model.safetensors.index.json").exists()
    assert not (out / "model.safetensors").exists()
    assert torch.equal(logits(a, IDS), logits(minimistral.from_pretrained(out), IDS))
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert (logits(theirs, IDS) - logits(a, IDS)).abs().max() < 1e-4


def test_transformers_small_shards_load(tmp_path):
    hf = hf_model("ministral3")
    hf.save_pretrained(tmp_path / "s", max_shard_size="50KB")
    assert len(list((tmp_path / "s").glob("*.safetensors"))) > 2
    ours = minimistral.from_pretrained(tmp_path / "s")
    assert (logits(ours, IDS) - logits(hf, IDS)).abs().max() < 1e-4


def test_bf16_file_loads_as_bf16(tmp_path):
    hf = hf_model("ministral3").to(torch.bfloat16)
    hf.save_pretrained(tmp_path / "bf16")
    ours = minimistral.from_pretrained(tmp_path / "bf16")
    assert ours.lm_head.weight.dtype == torch.bfloat16
    assert torch.equal(ours.model.layers[0].mlp.up_proj.weight, hf.model.layers[0].mlp.up_proj.weight)
    assert minimistral.from_pretrained(tmp_path / "bf16", dtype=torch.float32).lm_head.weight.dtype == torch.float32


def test_mistral3_multimodal_loads_whole_or_text_only(tmp_path, caplog):
    mm = hf_vision_model(tied=True)
    mm.save_pretrained(tmp_path / "mm")
    whole = minimistral.from_pretrained(tmp_path / "mm")
    assert hasattr(whole, "vision_tower")  # the image path: tests/test_vision.py
    with caplog.at_level("WARNING", logger="minimistral"):
        ours = minimistral.from_pretrained(tmp_path / "mm", text_only=True)
    assert "vision" in caplog.text and not hasattr(ours, "vision_tower")
    assert (logits(ours, IDS) - logits(mm, IDS)).abs().max() < 1e-4
    assert (logits(whole, IDS) - logits(mm, IDS)).abs().max() < 1e-4
    assert cli_main(["convert", "--checkpoint", str(tmp_path / "mm"), "--out", str(tmp_path / "text")]) == 0
    text_only = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "text").eval()
    assert (logits(text_only, IDS) - logits(mm, IDS)).abs().max() < 1e-4


# ----------------------------------------------------------------------------- bad input
def _edit_config(path, **changes):
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


def _edit_tensors(path, edit):
    file = path / "model.safetensors"
    tensors = load_file(file)
    edit(tensors)
    save_file(tensors, file, metadata={"format": "pt"})


BAD = {
    "unknown model_type": (
        lambda p: _edit_config(p, model_type="llama"),
        r"config\.json: unsupported model_type 'llama'",
    ),
    "missing tensor": (
        lambda p: _edit_tensors(p, lambda t: t.pop("model.layers.1.mlp.up_proj.weight")),
        r"missing tensor 'model\.layers\.1\.mlp\.up_proj\.weight'",
    ),
    "unexpected tensor": (
        lambda p: _edit_tensors(p, lambda t: t.update({"model.layers.2.mlp.up_proj.weight": torch.zeros(1)})),
        r"model\.safetensors: unexpected tensor 'model\.layers\.2\.mlp\.up_proj\.weight'",
    ),
    "shape disagrees with config": (
        lambda p: _edit_config(p, intermediate_size=128),
        r"model\.safetensors: tensor 'model\.layers\.0\.mlp\.\w+_proj\.weight' has shape .* config\.json implies",
    ),
    "truncated safetensors": (
        lambda p: (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:-1000]),
        r"model\.safetensors: unreadable safetensors file .*truncated",
    ),
    "pickle only": (
        lambda p: (p / "model.safetensors").rename(p / "pytorch_model.bin"),
        r"pytorch_model\.bin: only safetensors is read \(pickle files are never loaded\)",
    ),
    "config field of wrong type": (
        lambda p: _edit_config(p, num_hidden_layers="2"),
        r"config\.json: key 'num_hidden_layers' must be int, got '2' \(str\)",
    ),
    "bool where a number belongs": (
        lambda p: _edit_config(p, rms_norm_eps=True),
        r"config\.json: key 'rms_norm_eps' must be int/float",
    ),
    "missing config.json": (lambda p: (p / "config.json").unlink(), r"config\.json: missing"),
    "config not json": (lambda p: (p / "config.json").write_text("{oops"), r"config\.json: not valid JSON"),
    "missing shard": (
        lambda p: (p / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}})
        ),
        r"model-00002-of-00002\.safetensors: shard named in model\.safetensors\.index\.json is missing",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_checkpoint_gives_one_clear_error(hf_dir, case, capsys):
    corrupt, message = BAD[case]
    _, path = hf_dir()
    corrupt(path)
    with pytest.raises(CheckpointError, match=message):
        minimistral.from_pretrained(path)
    # the CLI says the same thing in one line and exits with status 2, no traceback
    capsys.readouterr()
    assert cli_main(["convert", "--checkpoint", str(path), "--out", str(path.parent / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("minimistral: error: ") and "\n" not in err and "Traceback" not in err


def test_failed_load_leaves_files_untouched(hf_dir):
    _, path = hf_dir()
    _edit_config(path, intermediate_size=128)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    with pytest.raises(CheckpointError):
        minimistral.from_pretrained(path)
    assert before == {p.name: p.read_bytes() for p in path.iterdir()}


def test_cli_error_exit_code_in_a_real_process(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "minimistral", "convert", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert (
        r.stderr.strip()
        == f"minimistral: error: {tmp_path / 'config.json'}: missing (a checkpoint directory needs config.json)"
    )


MEMORY_PROBE = """
import resource, sys, torch, minimistral
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
model = minimistral.from_pretrained(sys.argv[1])
with torch.no_grad():
    touched = sum(p.sum().item() for p in model.parameters())  # every page really read
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
"""


def test_loading_peak_memory_is_about_one_copy(tmp_path):
    cfg = minimistral.ModelConfig(
        vocab_size=16000, hidden_size=512, intermediate_size=2048, num_hidden_layers=6,
        num_attention_heads=8, num_key_value_heads=2, head_dim=64,
    )  # fmt: skip
    model = minimistral.Ministral3(cfg)
    size = model.num_parameters() * 4  # ~130 MB fp32
    minimistral.save_pretrained(model, tmp_path / "big", max_shard_size=40_000_000)
    del model
    r = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(tmp_path / "big")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) < 1.3 * size


def test_load_weights_copies_in_place_and_names_another_shape(tmp_path):
    """``hub.load_weights`` (``pretrain(init=)``): every tensor copied into the model in place, ties kept;
    a model that differs only in RoPE takes the weights; another shape is a one-line error."""
    from minimistral.arch.hub import load_weights, save_pretrained

    config = minimistral.get_config("tiny-3b").replace(num_hidden_layers=1, hidden_size=32, intermediate_size=64)
    torch.manual_seed(0)
    source = minimistral.Ministral3(config)
    save_pretrained(source, tmp_path)
    torch.manual_seed(1)
    target = minimistral.Ministral3(config.replace(rope_theta=5e4))
    head = target.lm_head.weight
    assert load_weights(target, tmp_path) is target
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert target.lm_head.weight is head and head is target.model.embed_tokens.weight  # still tied
    with pytest.raises(CheckpointError, match=r"not the weights of this model \(num_hidden_layers 1, this model 2\)"):
        load_weights(minimistral.Ministral3(config.replace(num_hidden_layers=2)), tmp_path)
