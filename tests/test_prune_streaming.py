"""Layer-at-a-time pruning: the in-memory path's weights, loads in transformers, peak memory well below the model."""

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from test_prune import IDS, batches, logits, model

import minimistral
from minimistral import ModelConfig
from minimistral.arch.hub import INDEX
from minimistral.errors import CheckpointError
from minimistral.prune.heuristics import prune
from minimistral.prune.streaming import CheckpointReader, prune_checkpoint, should_stream

SHAPE = {"num_layers": 2, "hidden_size": 32, "intermediate_size": 64}


def both_paths(tmp_path, parent, calib, **options):
    """The in-memory prune of ``parent`` and the streaming prune of its checkpoint, loaded back."""
    minimistral.save_pretrained(parent, tmp_path / "src")
    in_memory = prune(parent, calib, **SHAPE, **options)
    cfg = prune_checkpoint(tmp_path / "src", tmp_path / "out", calib, **SHAPE, **options)
    return in_memory, cfg, minimistral.from_pretrained(tmp_path / "out")


@pytest.mark.parametrize(
    "tied,tie,score,per_site_gain",
    [
        (False, None, "out/in", False),
        (True, None, "block_influence", True),
        (False, True, "counterfactual", True),  # an untied parent pruned to a tied child
        (True, False, "counterfactual_iterative", False),  # a tied parent untied exactly
        (False, None, "magnitude", True),
    ],
)
def test_streaming_gives_the_in_memory_weights(tmp_path, tied, tie, score, per_site_gain):
    parent = model(tie_word_embeddings=tied)
    options = {"layer_score": score, "tie_word_embeddings": tie, "per_site_gain": per_site_gain}
    in_memory, cfg, streamed = both_paths(tmp_path, parent, batches(), **options)
    assert cfg == in_memory.config == streamed.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (2, 32, 64)
    assert cfg.tie_word_embeddings == (tied if tie is None else tie)
    a, b = in_memory.state_dict(), streamed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6), k
    assert (logits(streamed, IDS) - logits(in_memory, IDS)).abs().max() < 1e-4
    # one shard per block, plus the embedding and the final norm (and head)
    weight_map = json.loads((tmp_path / "out" / INDEX).read_text())["weight_map"]
    assert len(set(weight_map.values())) == 2 + 2
    assert ("lm_head.weight" in weight_map) == (not cfg.tie_word_embeddings)


@pytest.mark.parametrize("tied", [False, True])
def test_streamed_checkpoint_loads_in_transformers(tmp_path, tied):
    transformers = pytest.importorskip("transformers")
    _, _, streamed = both_paths(tmp_path, model(tie_word_embeddings=tied), batches())
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        assert (hf(IDS).logits - logits(streamed, IDS)).abs().max() < 1e-4


def test_steps_left_out_and_bf16(tmp_path):
    """Only the FFN (tiny-24b -> tiny-14b is FFN only), in bf16: still the in-memory result, bit for bit."""
    parent = model(torch.bfloat16)
    minimistral.save_pretrained(parent, tmp_path / "src")
    in_memory = prune(parent, batches(), intermediate_size=40)
    cfg = prune_checkpoint(tmp_path / "src", tmp_path / "out", batches(), intermediate_size=40)
    streamed = minimistral.from_pretrained(tmp_path / "out")
    assert cfg == in_memory.config and streamed.lm_head.weight.dtype == torch.bfloat16
    assert all(torch.equal(v, streamed.state_dict()[k]) for k, v in in_memory.state_dict().items())


def test_bad_input(tmp_path):
    minimistral.save_pretrained(model(), tmp_path / "src")
    with pytest.raises(ValueError, match="out: the streaming path reads the checkpoint"):
        prune_checkpoint(tmp_path / "src", tmp_path / "src", batches(), num_layers=2)
    with pytest.raises(ValueError, match="unknown layer score"):
        prune_checkpoint(tmp_path / "src", tmp_path / "out", batches(), num_layers=2, layer_score="entropy")
    with pytest.raises(ValueError, match=r"hidden_size must be in 1\.\.48"):
        prune_checkpoint(tmp_path / "src", tmp_path / "out", batches(), hidden_size=64)
    with pytest.raises(ValueError, match="no calibration batches"):
        prune_checkpoint(tmp_path / "src", tmp_path / "out", [], intermediate_size=10)
    cfg = json.loads((tmp_path / "src" / "config.json").read_text())
    (tmp_path / "src" / "config.json").write_text(json.dumps(cfg | {"intermediate_size": 80}))
    with pytest.raises(CheckpointError, match=r"mlp\.\w+_proj\.weight' has shape .*96.*, config.json implies"):
        prune_checkpoint(tmp_path / "src", tmp_path / "out", batches(), num_layers=2)


def test_when_to_stream(tmp_path):
    """Stream when five times the weights (the in-memory peak, with headroom) exceed the available memory."""
    minimistral.save_pretrained(model(), tmp_path / "src")
    size = CheckpointReader(tmp_path / "src").weight_bytes()
    assert size == minimistral.from_pretrained(tmp_path / "src").num_parameters() * 4
    assert CheckpointReader(tmp_path / "src", torch.bfloat16).weight_bytes() == size // 2
    assert should_stream(size, 5 * size - 1) and not should_stream(size, 5 * size)
    assert not should_stream(size, None)


# ----------------------------------------------------------------------------- peak memory
# Peak RSS of a fresh process. Not ru_maxrss: Linux carries the parent's RSS at fork into the
# child's ru_maxrss across exec, which hides anything smaller. Instead the process warms torch
# up (its kernels are paged in on first use: ~100 MiB that does not depend on the model),
# resets its own high-water mark (``5 > /proc/self/clear_refs``) and reads VmHWM at the end.
MEASURE = textwrap.dedent(
    """
    import sys, torch
    import minimistral
    from minimistral.prune.heuristics import prune
    from minimistral.prune.streaming import prune_checkpoint
    src, out, path = sys.argv[1:4]
    g = torch.Generator().manual_seed(0)
    calib = [torch.randint(0, 4096, (4, 128), generator=g) for _ in range(2)]
    shape = dict(num_layers=10, hidden_size=512, intermediate_size=1536)
    small = minimistral.Ministral3(minimistral.ModelConfig(vocab_size=4096, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16))
    with torch.no_grad():  # warm-up: the same kernels on a small model, and the meta device
        small(calib[0])
        torch.linalg.eigh(torch.eye(64, dtype=torch.float64))
    with torch.device("meta"):
        minimistral.Ministral3(small.config)
    def status(key):  # bytes
        line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
        return int(line.split()[1]) * 1024
    open("/proc/self/clear_refs", "w").write("5")  # peak RSS := current RSS
    base = status("VmHWM")
    if path == "streaming":
        prune_checkpoint(src, out, calib, **shape)
    else:
        minimistral.save_pretrained(prune(minimistral.from_pretrained(src), calib, **shape), out)
    print(base, status("VmHWM"))
    """
)
BIG = ModelConfig(
    vocab_size=4096, hidden_size=768, intermediate_size=2048, num_hidden_layers=24, num_attention_heads=12,
    num_key_value_heads=4, head_dim=64, max_position_embeddings=256,
)  # fmt: skip


def peak_rss(src, out, path: str) -> tuple[int, int]:
    """(RSS after the imports, peak RSS) of a fresh process that prunes ``src`` by ``path``, in bytes."""
    run = subprocess.run([sys.executable, "-c", MEASURE, str(src), str(out), path], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    base, peak = map(int, run.stdout.split())
    return base, peak


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_streaming_peak_memory_is_well_below_the_model(tmp_path):
    """A 157M-parameter (600 MiB fp32) checkpoint: streaming adds under a third of the model to the process's peak."""
    torch.manual_seed(0)
    minimistral.save_pretrained(minimistral.Ministral3(BIG), tmp_path / "src")
    size = CheckpointReader(tmp_path / "src").weight_bytes()
    base, peak = peak_rss(tmp_path / "src", tmp_path / "out", "streaming")
    assert 0 < peak - base < size / 3, (peak - base, size)
    assert minimistral.from_pretrained(tmp_path / "out").config.hidden_size == 512
    shutil.rmtree(tmp_path / "src")  # pytest keeps the last runs' tmp_path: do not leave 600 MiB behind
