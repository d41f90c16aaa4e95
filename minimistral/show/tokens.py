"""Token boxes: which characters each token of a text covers (notebooks 01 and 02; matplotlib imported lazily)."""

from __future__ import annotations

from collections.abc import Sequence

from minimistral.data.tokenizer import Tokenizer

# Two fills that alternate token by token, so that neighbouring tokens never share a colour; every token
# also gets its own outlined box, inset from its neighbours, so where one ends and the next starts is visible.
TOKEN_COLOURS = ("#fde2a6", "#b9e3f5")
TOKEN_EDGE = "#555555"
GAP = 0.09  # white margin, in character cells, on each side of a token's box
SHOW = {" ": "·", "\n": "↵", "\t": "→"}  # how whitespace is drawn, so that a token's leading space shows


def token_pieces(tokenizer: Tokenizer, text: str) -> list[str]:
    """The text each token of ``text`` stands for, in order (``"".join`` gives ``text`` back).

    Works for any ``data.tokenizer.Tokenizer`` (ours or Tekken) by decoding growing
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


def token_runs(cells: Sequence[tuple[int, str, int, int]]) -> list[tuple[int, int, int, int]]:
    """``(token index, row, first column, width)`` of every unbroken run of one token's cells on one row.

    A token drawn on one line is one run; a token that wraps (longer than a line) is one run per line.
    """
    runs: list[list[int]] = []
    for k, _, row, col in cells:
        if runs and runs[-1][0] == k and runs[-1][1] == row and runs[-1][2] + runs[-1][3] == col:
            runs[-1][3] += 1
        else:
            runs.append([k, row, col, 1])
    return [(k, row, col, width) for k, row, col, width in runs]


def _draw_cells(ax, cells: Sequence[tuple[int, str, int, int]], top: float, fontsize: float) -> None:
    """One outlined box per token (run) and its characters, row 0 starting ``top`` units below y = 0.

    Fills alternate between the two ``TOKEN_COLOURS`` in token order (tokens that cover no character,
    which end inside a multi-byte character, are skipped), and each box is inset by ``GAP`` on both
    sides, so two neighbouring tokens always differ in colour and are separated by a white gap.
    """
    from matplotlib.patches import FancyBboxPatch

    shown = {k: n for n, k in enumerate(dict.fromkeys(k for k, *_ in cells))}  # k -> its rank among drawn tokens
    for k, row, col, width in token_runs(cells):
        y = -top - row - 1
        box = FancyBboxPatch(
            (col + GAP, y + 0.04), width - 2 * GAP, 0.82, boxstyle="round,pad=0,rounding_size=0.12",
            facecolor=TOKEN_COLOURS[shown[k] % len(TOKEN_COLOURS)], edgecolor=TOKEN_EDGE, linewidth=0.6,
        )  # fmt: skip
        ax.add_patch(box)
    for _, ch, row, col in cells:
        y = -top - row - 1
        ax.text(col + 0.5, y + 0.45, ch, ha="center", va="center", fontsize=fontsize, family="monospace")


def draw_token_panels(panels: Sequence[tuple[str, Sequence[str]]], width: int = 64, fontsize: float = 9):
    """A figure of titled token-box blocks stacked top to bottom, one per ``(title, pieces)``; returns it.

    One monospace cell per character and one outlined box per token, in alternating colours with a
    gap between boxes; spaces show as ``·`` and newlines as ``↵``, so the boxes show exactly which
    characters each token covers.
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
