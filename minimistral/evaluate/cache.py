"""Scores cached by checkpoint content: a finished evaluation is never computed twice (engineering).

A score is a pure function of the checkpoint's weights and config and of what is measured (the
evaluation data, its size, the metric's code version). :func:`cached` names the result by the
sha256 of all three and keeps it as JSON under ``runs/scores/``, so re-running the driver or
re-executing a notebook re-scores nothing, while a retrained checkpoint (new bytes) is scored anew.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from minimistral.files import write_json
from minimistral.paths import runs_dir

SCORES_VERSION = 1  # bump when a metric's code changes what it returns: old cached scores are then never read


@lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint_key(checkpoint: str | os.PathLike) -> str:
    """sha256 over a checkpoint's ``config.json`` and weight files (what the model computes, nothing else)."""
    d = Path(checkpoint)
    files = [d / "config.json", *sorted(d.glob("*.safetensors"))]
    if not files[0].is_file() or len(files) < 2:
        raise FileNotFoundError(f"{d}: not a checkpoint (needs config.json and *.safetensors)")
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f.name.encode() + bytes.fromhex(_file_sha256(str(f), st.st_size, st.st_mtime_ns)))
    return h.hexdigest()


def cached(checkpoint: str | os.PathLike, what: str, spec: dict, compute: Callable[[], dict | list]) -> dict | list:
    """``compute()``, or its stored value for this checkpoint's content, ``what`` and ``spec`` (JSON-able)."""
    spec_key = hashlib.sha256(json.dumps([SCORES_VERSION, what, spec], sort_keys=True).encode()).hexdigest()[:16]
    path = runs_dir() / "scores" / checkpoint_key(checkpoint)[:24] / f"{what}-{spec_key}.json"
    if path.is_file():
        return json.loads(path.read_text())["value"]
    value = compute()
    write_json({"what": what, "spec": spec, "checkpoint": str(checkpoint), "value": value}, path)
    return value
