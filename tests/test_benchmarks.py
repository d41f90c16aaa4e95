"""The benchmark script runs (a smoke run; speed itself is never asserted in tests)."""

import importlib.util
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
