"""Plain-text tables for the command line and notebooks."""

from __future__ import annotations


def format_table(rows: list[tuple[str, ...]], left: int = 1) -> str:
    """Columns padded to width: the first ``left`` left-aligned, the rest right-aligned; a rule under the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
