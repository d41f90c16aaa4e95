"""Writing results safely and showing them: atomic files, CSV tables, plain-text tables (engineering).

Every file the project writes (checkpoints, metrics, tables) goes through :func:`atomic_write`:
a temporary file in the same directory, fsync, then a rename, so an interrupted run never leaves
a half-written file where a finished one was.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from safetensors.torch import save_file

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(file: str | os.PathLike, content: bytes | dict, metadata: dict[str, str] | None = None) -> None:
    """Write ``content`` (bytes, or a dict of tensors saved as safetensors with ``metadata`` strings in its
    header) to ``file`` atomically."""
    file = Path(file)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the permissions open() would
    try:
        if isinstance(content, dict):
            save_file(content, tmp, metadata={"format": "pt"} | (metadata or {}))
        else:
            Path(tmp).write_bytes(content)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(x):
    if isinstance(x, np.integer | np.floating):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def write_json(obj, path: str | os.PathLike) -> None:
    """``obj`` as indented JSON, atomically (numpy scalars become numbers)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(obj, indent=2, default=_json_default).encode())


def write_csv(rows: Sequence[Mapping], path: str | os.PathLike, digits: int | None = None) -> None:
    """``rows`` (dicts with the same keys) as CSV, atomically; floats to ``digits`` significant digits if given."""
    if not rows:
        raise ValueError(f"{path}: no rows to write")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: f"{v:.{digits}g}" if digits and isinstance(v, float) else v for k, v in r.items()})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buf.getvalue().encode())


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a CSV file as dicts of strings; a missing file is a one-line error naming it."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such table (run `minimistral reproduce` to write it)")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def format_table(rows: list[tuple[str, ...]], left: int = 1) -> str:
    """Columns padded to width: the first ``left`` left-aligned, the rest right-aligned; a rule under the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
