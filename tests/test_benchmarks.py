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
