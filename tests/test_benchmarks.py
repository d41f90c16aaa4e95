"""The benchmark script runs (a smoke run; speed itself is never asserted in tests)."""

import subprocess
import sys
from pathlib import Path

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


def test_copy_onset_windows_repeat_every_span_and_the_split_reads_the_repeats():
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("copy_onset", BENCH.parent / "copy_onset.py")
    copy_onset = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy_onset)
    w = copy_onset.copy_windows(3, 4, 50, seed=0, width=33)  # [3, 33]: spans s s t t ...
    position = torch.arange(1, 33)  # the targets' positions, as split_losses reads them
    repeat = (position // 4) % 2 == 1
    assert torch.equal(w[:, position[repeat]], w[:, position[repeat] - 4])  # a repeat copies 4 tokens back
    assert (w[:, position[~repeat][4:]] != w[:, position[~repeat][4:] - 4]).float().mean() > 0.9
    assert w.min() >= copy_onset.FIRST_ID and w.max() < copy_onset.FIRST_ID + 50
