"""Image understanding across the tiny family: the driver's vision steps and what they measure.

Steps of ``minimistral reproduce`` (each returns at once when its checkpoint exists):

* :func:`see_parent` -> ``<cascade root>/vision-parent/questions/checkpoint``: the tiny parent with
  a new Pixtral-shaped encoder and projector (``vision.train.vision_parent``);
* :func:`see_child` -> ``<cascade root>/<child>-vision/checkpoint``: each child's Base with the
  parent's encoder copied and frozen and a new projector, distilled from the parent
  (``vision.train.vision_child``); a step right after the child's long stage, so the cascade's
  text stages and the long-context study stay exactly as they were;
* :func:`run_vision_study`: accuracy on held-out image questions of the parent and every child,
  against chance, the majority answer and the parent reading black images (text only); on
  tiny-3b over ``scale.vision.seeds`` seeds: the paper's recipe (frozen ViT, KD) against a
  projector trained with next-token loss only and against an unfrozen ViT; and whether learning
  to see moved each language model's prose and math (held-out bits per byte before and after).
  -> ``data/results/vision_accuracy.csv``, ``vision_ablations.csv``, ``vision_text_bpb.csv``.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from minimistral.arch.config import TINY_WINDOW
from minimistral.arch.hub import from_pretrained
from minimistral.data.corpus import build_corpus, windows
from minimistral.data.tokenizer import load_tokenizer, per_tokenizer
from minimistral.evaluate.loss import model_score, token_bytes, validation_windows, with_total
from minimistral.files import read_csv, write_csv, write_json
from minimistral.paths import parent_dir, results_dir
from minimistral.scales import Scale, get_scale
from minimistral.train import CHECKPOINT, TrainConfig, finished
from minimistral.vision.config import TINY_VISION
from minimistral.vision.data import ImageQuestions, SceneCells, WithText, load_mnist, make_scenes, split_sources
from minimistral.vision.train import answer_accuracy, vision_child, vision_parent

CHILD_MODELS = ("tiny-14b", "tiny-8b", "tiny-3b")
ABLATIONS = {  # name -> vision_child options; "paper" is the paper's recipe
    "paper": dict(ntp_weight=0.0, freeze_vit=True),
    "next-token only": dict(ntp_weight=1.0, freeze_vit=True),
    "ViT unfrozen": dict(ntp_weight=0.0, freeze_vit=False),
}
ABLATION_CHILD = "tiny-3b"
PARENT_RECIPE = "parent: new ViT + projector"
IMAGE_ROW = "Image questions, exact match, greedy (%)"  # Table 3's row for images, as the paper's MMMU


def table3_image_row(scale: str) -> list[dict]:
    """Table 3's image row (mean over the four question kinds) from ``vision_accuracy.csv``; [] before the study."""
    file = results_dir(scale) / "vision_accuracy.csv"
    if not file.is_file():
        return []
    mine = {r["model"]: r for r in read_csv(file) if r["recipe"] in (PARENT_RECIPE, "paper")}
    return [{"evaluation": IMAGE_ROW} | {m: round(100 * float(r["mean"]), 2) for m, r in mine.items()}]


@dataclass(frozen=True)
class VisionData:
    cells: SceneCells  # the alignment stage's scenes (the training scenes)
    train: ImageQuestions
    test: ImageQuestions  # scenes of held-out source images only
    text: WithText  # ``train`` with ``scale.vision.text_rows`` pretraining windows per batch


@per_tokenizer
def vision_data(tokenizer_dir: str, scale_name: str) -> VisionData:
    """Training and held-out image questions at ``scale`` (deterministic; built once per tokenizer per process)."""
    v = get_scale(scale_name).vision
    tok = load_tokenizer(tokenizer_dir)
    images, labels = load_mnist()
    sources = split_sources(labels)
    scenes = make_scenes(sources["train"], v.train_scenes, seed=0)
    test = make_scenes(sources["test"], v.test_scenes, seed=1)
    train = ImageQuestions(scenes, images, labels, tok, TINY_VISION)
    text = windows(build_corpus().train, TINY_WINDOW) if v.text_rows else torch.empty(0, TINY_WINDOW + 1)
    return VisionData(
        SceneCells(scenes, images, labels, tok, TINY_VISION),
        train,
        ImageQuestions(test, images, labels, tok, TINY_VISION),
        WithText(train, text, v.text_rows),
    )


def _config(scale: Scale, steps: int, batch_size: int, lr: float, seed: int = 0) -> TrainConfig:
    every = max(1, steps // 4)
    return TrainConfig(
        steps=steps, batch_size=batch_size, lr=lr, min_lr=lr / 10, warmup_steps=max(1, steps // 10), seed=seed,
        compile=scale.vision.compile, eval_every=every, eval_batches=4, ckpt_every=every,
    )  # fmt: skip


def see_parent(parent: Path, root: Path, scale: str | Scale, device=None) -> Path:
    """The parent that reads images: ``root/vision-parent/questions/checkpoint``."""
    s = get_scale(scale)
    out = root / "vision-parent"
    if finished(out / "questions", s.vision.parent_steps):
        return out / "questions" / CHECKPOINT
    data = vision_data(str(parent), s.name)
    align = _config(s, s.vision.align_steps, s.vision.align_batch_size, s.vision.align_lr)
    tune = _config(s, s.vision.parent_steps, s.vision.batch_size, s.vision.lr)
    return vision_parent(parent, data.cells, data.text, out, align, tune, s.vision.lm_lr_scale, data.test, device)


def see_child(base: Path, teacher: Path, out: Path, scale: str | Scale, seed: int = 0, device=None, **options) -> Path:
    """A child that reads images through the parent's frozen ViT and its own projector: ``out/checkpoint``."""
    s = get_scale(scale)
    if finished(out, s.vision.child_steps):
        return out / CHECKPOINT
    data = vision_data(str(teacher), s.name)
    cfg = _config(s, s.vision.child_steps, s.vision.batch_size, s.vision.lr, seed)
    return vision_child(base, teacher, data.text, out, cfg, val_data=data.test, device=device, **options)


# ----------------------------------------------------------------------------- measurements
def chance(data: ImageQuestions) -> dict[str, float]:
    """Accuracy of a uniform guess among the answers a kind can have (scenes of 1-3 digits)."""
    n_answers = {"read": 10 + 10**2 + 10**3, "count": 3, "sum": 28, "max": 10}
    return {k: 1 / n_answers[k] for k in data.kinds}


def majority(train: ImageQuestions, test: ImageQuestions) -> dict[str, float]:
    """Accuracy on ``test`` of always giving the most frequent training answer of each kind."""
    out = {}
    for i, kind in enumerate(test.kinds):
        common = Counter(train.answer_text(j) for j in range(i, len(train), len(train.kinds))).most_common(1)[0][0]
        out[kind] = statistics.fmean(test.answer_text(j) == common for j in range(i, len(test), len(test.kinds)))
    return out


def _row(model: str, recipe: str, seed, acc: dict[str, float]) -> dict:
    return (
        {"model": model, "recipe": recipe, "seed": seed}
        | {k: round(v, 4) for k, v in acc.items()}
        | {"mean": round(statistics.fmean(acc.values()), 4)}
    )


def run_vision_study(root: Path, scale: str | Scale, device=None) -> dict[str, list[dict]]:
    """Every vision model's held-out accuracy, the baselines and the tiny-3b ablations; CSVs in ``results_dir``."""
    s = get_scale(scale)
    done, names = root / "vision-study" / "done.json", ("accuracy", "ablations", "text")
    files = {n: results_dir(s.name) / f"vision_{n if n != 'text' else 'text_bpb'}.csv" for n in names}
    if done.is_file() and all(f.is_file() for f in files.values()):  # --from an earlier step deletes `done`
        return {n: read_csv(f) for n, f in files.items()}
    parent = root / "vision-parent" / "questions" / CHECKPOINT
    data = vision_data(str(parent), s.name)
    teacher = from_pretrained(parent, device=device)
    rows = [
        _row("chance", "uniform answer", "", chance(data.test)),
        _row("majority", "most frequent training answer", "", majority(data.train, data.test)),
        _row("tiny-24b", "text only (black images)", 0, answer_accuracy(teacher, data.test, blind=True)),
        _row("tiny-24b", PARENT_RECIPE, 0, answer_accuracy(teacher, data.test)),
    ]
    for child in CHILD_MODELS:
        model = from_pretrained(root / f"{child}-vision" / CHECKPOINT, device=device)
        rows.append(_row(child, "paper", 0, answer_accuracy(model, data.test)))
    ablations = [r for r in rows if r["model"] == ABLATION_CHILD]
    base = root / f"{ABLATION_CHILD}-long" / CHECKPOINT
    for recipe, options in ABLATIONS.items():
        for seed in range(s.vision.seeds):
            if recipe == "paper" and seed == 0:
                continue  # the driver's own tiny-3b vision step
            out = root / "vision-study" / f"{recipe.replace(' ', '-')}-s{seed}"
            ckpt = see_child(base, parent, out, s, seed=seed, device=device, **options)
            ablations.append(_row(ABLATION_CHILD, recipe, seed, answer_accuracy(from_pretrained(ckpt), data.test)))
    tables = {"accuracy": rows, "ablations": ablations, "text": text_before_after(root, s, device)}
    for name, table in tables.items():
        write_csv(table, files[name])
    write_json({"tables": [str(f.name) for f in files.values()]}, done)
    return tables


def text_before_after(root: Path, scale: Scale, device=None) -> list[dict]:
    """Held-out bits per byte of each language model before and after its vision step, per source."""
    corpus = build_corpus()
    nbytes = token_bytes(corpus.tokenizer, corpus.vocab_size)
    windows = validation_windows(corpus, TINY_WINDOW, scale.report.per_source)
    pairs = {"tiny-24b": (parent_dir(scale.name) / CHECKPOINT, root / "vision-parent" / "questions" / CHECKPOINT)}
    pairs |= {c: (root / f"{c}-long" / CHECKPOINT, root / f"{c}-vision" / CHECKPOINT) for c in CHILD_MODELS}
    rows = []
    for model, (before, after) in pairs.items():
        scores = []
        for ck in (before, after):
            model_ = from_pretrained(ck, device=device)
            scores.append(with_total({k: model_score(model_, w, nbytes) for k, w in windows.items()}))
        rows += [
            {"model": model, "source": src, "bpb_before": round(scores[0][src].bits_per_byte, 4),
             "bpb_after": round(scores[1][src].bits_per_byte, 4)}
            for src in scores[0]
        ]  # fmt: skip
    return rows
