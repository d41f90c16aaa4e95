"""Notebook 02's non-plot logic: the retrieval document shown with its copied span, token boxes per run."""

from __future__ import annotations

import pytest

from minimistral.show.pretraining import MARKS, copy_marked
from minimistral.show.tokens import token_layout, token_runs


class Letters:
    """A stand-in tokenizer: id i decodes to the i-th lower-case letter."""

    def decode(self, ids):
        return "".join(chr(ord("a") + i) for i in ids)


def test_copy_marked_wraps_the_span_and_its_copy():
    ids = [0, 1, 2, 3, 4, 1, 2, 5]  # "abcdebcf": "bc" at 1 is copied at 5
    left, right = MARKS
    assert copy_marked(Letters(), ids, source=1, answer=5, size=2) == f"a{left}bc{right}de{left}bc{right}f"


def test_copy_marked_rejects_a_copy_before_its_source():
    with pytest.raises(ValueError):
        copy_marked(Letters(), [0, 1, 2, 3], source=2, answer=1, size=1)


def test_token_runs_one_box_per_token_per_line():
    cells = token_layout(["ab", "cde", "f"], width=4)  # "ab" + "cde" overflows: "cde" starts line 2
    assert token_runs(cells) == [(0, 0, 0, 2), (1, 1, 0, 3), (2, 1, 3, 1)]
    long = token_layout(["abcdef"], width=4)  # longer than a line: one run per line
    assert token_runs(long) == [(0, 0, 0, 4), (0, 1, 0, 2)]
