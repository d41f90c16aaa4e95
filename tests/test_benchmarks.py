"""The benchmark script runs (a smoke run; speed itself is never asserted in tests)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_speed.py"


def test_bench_speed_quick_runs_and_decodes_identically(tmp_path):
    r = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--repeats", "1", "--json", str(tmp_path / "b.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "decode outputs identical: True" in r.stdout
    assert (tmp_path / "b.json").exists()


def _load(name: str):
    """A script of ``benchmarks/`` as a module (it is not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCH.parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_copy_onset_windows_repeat_every_span_and_the_split_reads_the_repeats():
    copy_onset = _load("copy_onset")
    w, copied = copy_onset.copy_windows(3, 4, 50, seed=0, width=33)  # [3, 33]: spans s s t t ...
    position = torch.arange(1, 33)  # the targets' positions, as split_losses reads them
    repeat = (position // 4) % 2 == 1
    assert torch.equal(copied[:, 1:], repeat.expand(3, -1))
    assert torch.equal(w[:, position[repeat]], w[:, position[repeat] - 4])  # a repeat copies 4 tokens back
    assert (w[:, position[~repeat][4:]] != w[:, position[~repeat][4:] - 4]).float().mean() > 0.9
    assert w.min() >= copy_onset.FIRST_ID and w.max() < copy_onset.FIRST_ID + 50


def test_copy_onset_variable_layout_copies_at_offsets_position_cannot_tell():
    """With ``span_max`` and ``gap`` each copied token equals one earlier in its window, at an offset
    that varies (a fixed look-back head cannot predict it)."""
    copy_onset = _load("copy_onset")
    w, copied = copy_onset.copy_windows(20, 4, 4000, seed=0, width=257, span_max=12, gap=6)
    offsets = set()
    for row, marks in zip(w.tolist(), copied.tolist(), strict=True):
        for t in (t for t, c in enumerate(marks) if c):
            earlier = [t - j for j in range(1, t + 1) if row[t - j] == row[t]]  # ids from 4,000: few collisions
            assert earlier
            offsets.add(earlier[0])
    assert len(offsets) > 10  # 4..12 + 0..6 tokens back: many offsets
    assert 0.3 < copied.float().mean() < 0.5  # repeats are under half the tokens (gaps take the rest)


def test_a_benchmark_script_fails_on_a_bad_checkpoint_in_one_line(tmp_path):
    # the scripts share the CLI's error handling (minimistral.cli.guarded): no traceback, exit 2
    r = subprocess.run(
        [sys.executable, str(BENCH.parent / "copy_onset.py"), "--probe", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip() == f"minimistral: error: {tmp_path / 'nope'}: not a checkpoint directory"


def test_repeat_windows_copy_one_sequence_of_distinct_ids_at_a_varying_offset():
    copy_onset = _load("copy_onset")
    w, copied = copy_onset.repeat_windows(20, 100, torch.Generator().manual_seed(0), width=129)  # [20, 129]
    lengths = copied.float().argmax(1)  # the first repeat's position = the sequence's length
    assert lengths.min() >= 16 and lengths.max() <= 64 and len(set(lengths.tolist())) > 5  # the offset varies
    for row, mark, n in zip(w, copied, lengths.tolist(), strict=True):
        assert len(set(row[:n].tolist())) == n  # distinct: the earlier occurrence is never ambiguous
        assert torch.equal(row[n:], row[:-n]) and not mark[:n].any() and mark[n:].all()
        assert row.min() >= copy_onset.FIRST_ID and row.max() < copy_onset.FIRST_ID + 100


def test_induction_onset_runs_both_models(tmp_path):
    script = BENCH.parent / "induction_onset.py"
    out = tmp_path / "curve.json"
    small = ["--layers", "1", "--hidden", "32", "--steps", "100", "--json", str(out)]
    for model in (["--model", "reference", "--rope"], ["--model", "ministral", "--init-std", "0.05"]):
        r = subprocess.run([sys.executable, str(script), *model, *small], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        (point,) = json.loads(out.read_text())["curve"]
        assert point["step"] == 100 and 0 < point["repeat"] < 20 and 0 < point["first"] < 20
    r = subprocess.run([sys.executable, str(script), "--rope"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--rope is for --model reference" in r.stderr
