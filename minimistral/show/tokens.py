"""Plotting helpers for the notebooks (matplotlib is imported lazily: it is an optional dependency)."""

from __future__ import annotations

from collections.abc import Sequence

from minimistral.data.tokenizer import Tokenizer

# Light, distinguishable fills for neighbouring tokens.
TOKEN_COLOURS = ("#fde2a6", "#b9e3f5", "#cdeccb", "#f7c6d9", "#ddd3f2", "#f9d3b4")
SHOW = {" ": "·", "\n": "↵", "\t": "→"}  # how whitespace is drawn, so that a token's leading space shows


def token_pieces(tokenizer: Tokenizer, text: str) -> list[str]:
    """The text each token of ``text`` stands for, in order (``"".join`` gives ``text`` back).

    Works for any ``minimistral.tokenizer.Tokenizer`` (ours or Tekken) by decoding growing
    prefixes of the ids; a token that ends inside a multi-byte character gets an empty piece
    and the character goes to the token that completes it.
    """
    ids = tokenizer.encode(text, bos=False)
    pieces, done = [], ""
    for i in range(len(ids)):
        prefix = tokenizer.decode(ids[: i + 1])
        if prefix.startswith(done) and "\ufffd" not in prefix[len(done) :]:
            pieces.append(prefix[len(done) :])
            done = prefix
        else:
            pieces.append("")
    return pieces


def token_layout(pieces: Sequence[str], width: int = 64) -> list[tuple[int, str, int, int]]:
    """``(token index, shown character, row, column)`` for every character, wrapping at ``width``.

    A token that would overflow the line starts a new one (unless it is longer than a line);
    a newline ends its line. Whitespace is shown with ``SHOW``.
    """
    cells, row, col = [], 0, 0
    for k, piece in enumerate(pieces):
        if col + len(piece) > width and col > 0:
            row, col = row + 1, 0
        for ch in piece:
            if col >= width:
                row, col = row + 1, 0
            cells.append((k, SHOW.get(ch, ch), row, col))
            row, col = (row + 1, 0) if ch == "\n" else (row, col + 1)
    return cells


def _draw_cells(ax, cells: Sequence[tuple[int, str, int, int]], top: float, fontsize: float) -> None:
    """Boxes and characters of ``token_layout`` cells, row 0 starting ``top`` units below y = 0."""
    from matplotlib.patches import Rectangle

    for k, ch, row, col in cells:
        y = -top - row - 1
        ax.add_patch(Rectangle((col, y), 1, 0.86, facecolor=TOKEN_COLOURS[k % len(TOKEN_COLOURS)], edgecolor="none"))
        ax.text(col + 0.5, y + 0.43, ch, ha="center", va="center", fontsize=fontsize, family="monospace")


def draw_token_panels(panels: Sequence[tuple[str, Sequence[str]]], width: int = 64, fontsize: float = 9):
    """A figure of titled token-box blocks stacked top to bottom, one per ``(title, pieces)``; returns it.

    One monospace cell per character, a new colour per token; spaces show as ``·`` and
    newlines as ``↵``, so the boxes show exactly which characters each token covers.
    """
    import matplotlib.pyplot as plt

    layouts = [token_layout(pieces, width) for _, pieces in panels]
    rows = [max((row for *_, row, _ in cells), default=0) + 1 for cells in layouts]
    height = sum(rows) + 2 * len(panels)  # per panel: a title row, its rows, a gap row
    cell = fontsize / 72 * 1.45  # inches per character cell
    fig, ax = plt.subplots(figsize=(width * cell, height * cell))
    fig.subplots_adjust(0, 0, 1, 1)
    top = 0
    for (title, _), cells, n in zip(panels, layouts, rows, strict=True):
        ax.text(0, -top - 0.5, title, fontsize=fontsize + 1, va="center")
        _draw_cells(ax, cells, top + 1, fontsize)
        top += n + 2
    ax.set_xlim(-0.2, width + 0.2)
    ax.set_ylim(-height + 0.8, 0.2)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig
