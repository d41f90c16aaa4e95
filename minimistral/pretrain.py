"""Pretraining the tiny parent, our Mistral Small 3.1 (paper section 3: every child descends from it).

The paper starts from a pretrained 24B parent. Ours is ``tiny-24b``, pretrained here on
real text (Shakespeare, Milton) and procedural math with worked solutions, so that
pruning, distillation and post-training later have a teacher whose activations mean
something. Two scales: ``ci`` (minutes, a smoke run) and ``default`` (the reported run).

``pretrain(scale)`` trains (resuming if a checkpoint exists) and ``evaluate_parent``
reports held-out loss, perplexity and bits per byte per source next to unigram and
bigram baselines fitted on the same training split, plus generated samples.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from minimistral.config import TINY_CONFIGS
from minimistral.data import Corpus, build_corpus, math_prompt, windows
from minimistral.evaluate import NGram, Score, baseline_scores, model_score, token_bytes, with_total
from minimistral.generate import generate
from minimistral.hub import _atomic_write, from_pretrained
from minimistral.model import Ministral3, default_device
from minimistral.report import format_table
from minimistral.train import CHECKPOINT, TrainConfig, Trainer, Windows

CHECKOUT = Path(__file__).resolve().parent.parent
PARENT = "tiny-24b"


@dataclass(frozen=True)
class Scale:
    """How long to train and how much to evaluate. ``seq_len`` is the parent's context window."""

    steps: int
    batch_size: int = 16
    seq_len: int = 256
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 40
    eval_every: int = 50
    ckpt_every: int = 50
    eval_windows: int | None = None  # per source in the final report; None = the whole validation split
    sample_tokens: int = 80


SCALES = {
    "ci": Scale(steps=40, warmup_steps=10, eval_every=20, ckpt_every=20, eval_windows=24, sample_tokens=24),
    "default": Scale(steps=600),  # 600 x 16 x 256 = 2.46M tokens, ~1.1 epochs of the training split
}


def _checkout_or_cwd() -> Path:
    return CHECKOUT if (CHECKOUT / "pyproject.toml").is_file() else Path.cwd()


def run_dir(scale: str) -> Path:
    """``runs/parent-<scale>`` (git-ignored) in the checkout."""
    return _checkout_or_cwd() / "runs" / f"parent-{scale}"


def results_dir(scale: str) -> Path:
    """Where tables go: ``data/results`` for the default run (committed), the run directory for ``ci``."""
    return _checkout_or_cwd() / "data" / "results" if scale == "default" else run_dir(scale) / "results"


def get_scale(scale: str) -> Scale:
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}")
    return SCALES[scale]


def validation_windows(corpus: Corpus, seq_len: int, per_source: int | None = None) -> dict[str, torch.Tensor]:
    """Held-out windows per source; with ``per_source``, that many evenly spaced windows each."""
    out = {}
    for source, stream in corpus.val.items():
        w = windows(stream, seq_len)
        if per_source is not None and w.shape[0] > per_source:
            w = w[torch.linspace(0, w.shape[0] - 1, per_source).long()]
        out[source] = w
    return out


def pretrain(
    scale: str = "default",
    out: str | Path | None = None,
    device=None,
    corpus: Corpus | None = None,
    compile: bool = False,
) -> Path:
    """Train ``tiny-24b`` at ``scale``; resumes from ``out/checkpoint`` if present. Returns the checkpoint dir.

    ``compile``: run the engine under ``torch.compile`` with the fused AdamW (``TrainConfig.compile``).
    """
    s = get_scale(scale)
    out = Path(out) if out else run_dir(scale)
    corpus = corpus or build_corpus()
    torch.manual_seed(0)
    model = Ministral3(TINY_CONFIGS[PARENT])
    cfg = TrainConfig(
        steps=s.steps,
        batch_size=s.batch_size,
        lr=s.lr,
        min_lr=s.min_lr,
        warmup_steps=s.warmup_steps,
        eval_every=s.eval_every,
        ckpt_every=s.ckpt_every,
        eval_batches=4,
        compile=compile,
    )
    # periodic validation: the first eval_batches x batch_size windows, interleaved so every source is in them
    per_source = validation_windows(corpus, s.seq_len, per_source=4 * s.batch_size // len(corpus.val) + 1)
    val = rearrange(torch.stack(list(per_source.values())), "source n t -> (n source) t")
    trainer = Trainer(
        model,
        cfg,
        Windows(windows(corpus.train, s.seq_len)),
        out,
        val_data=Windows(val),
        device=device or default_device(),
        extra_files={"tokenizer.json": corpus.tokenizer_path},
        desc=f"pretrain {PARENT} ({scale})",
    )
    trainer.fit()
    return out / CHECKPOINT


SAMPLE_PROMPTS = ("HAMLET.\n", "To be, or not to be", "Of Man's first disobedience")


def samples(model: Ministral3, corpus: Corpus, max_new_tokens: int, seed: int = 0) -> list[dict]:
    """Continuations of a few fixed prompts and one held-out math question (temperature 0.8, top-p 0.95)."""
    tok = corpus.tokenizer
    val = corpus.val_docs
    first_math = val[list(val["source"]).index("math")]["question"]
    prompts = [*SAMPLE_PROMPTS, math_prompt(first_math)]
    out = []
    for i, prompt in enumerate(prompts):
        ids = torch.tensor([[corpus.bos_id, *tok.encode(prompt).ids]])
        new = generate(
            model, ids, max_new_tokens, temperature=0.8, top_p=0.95, seed=seed + i, eos_token_id=corpus.eos_id
        )
        out.append({"prompt": prompt, "continuation": tok.decode(new[0, ids.shape[1] :].tolist())})
    return out


def evaluate_parent(checkpoint: str | Path, scale: str = "default", corpus: Corpus | None = None, device=None) -> dict:
    """Held-out scores of the parent and the n-gram baselines per source, samples; written to ``results_dir``."""
    s = get_scale(scale)
    corpus = corpus or build_corpus()
    model = from_pretrained(checkpoint, device=device or default_device())
    nbytes = token_bytes(corpus.tokenizer, corpus.vocab_size)
    val = validation_windows(corpus, s.seq_len, s.eval_windows)
    t0 = time.perf_counter()
    scores = {"tiny-24b": with_total({src: model_score(model, w, nbytes) for src, w in val.items()})}
    ngram = NGram(corpus.train, corpus.vocab_size)
    base = baseline_scores(ngram, val, nbytes)
    scores["bigram"], scores["unigram"] = with_total(base["bigram"]), with_total(base["unigram"])
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    report = {
        "scale": scale,
        "scale_settings": asdict(s),
        "model": PARENT,
        "parameters": model.num_parameters(),
        "train_steps": state["step"],
        "train_tokens": state["tokens"],
        "bigram_beta": base["bigram_beta"],
        "scores": {m: {src: sc.as_dict() for src, sc in per.items()} for m, per in scores.items()},
        "mixture": corpus.report,
        "tokenizer": corpus.tokenizer_stats,
        "samples": samples(model, corpus, s.sample_tokens),
        "eval_seconds": time.perf_counter() - t0,
    }
    write_results(report, scores, results_dir(scale))
    return report


def write_results(report: dict, scores: dict[str, dict[str, Score]], directory: Path) -> None:
    """``pretrain_eval.csv`` (model x source: loss, perplexity, bits/byte) and ``pretrain_report.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = [["model", "source", "tokens", "bytes", "loss_nats", "perplexity", "bits_per_byte"]]
    for model, per in scores.items():
        for src, sc in per.items():
            rows.append(
                [model, src, sc.tokens, sc.bytes, f"{sc.loss:.4f}", f"{sc.perplexity:.2f}", f"{sc.bits_per_byte:.4f}"]
            )
    lines = [",".join(map(str, r)) for r in rows]
    _atomic_write(directory / "pretrain_eval.csv", ("\n".join(lines) + "\n").encode())
    _atomic_write(directory / "pretrain_report.json", json.dumps(report, indent=2, default=_json_default).encode())


def _json_default(x):
    if isinstance(x, np.integer | np.floating):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def format_scores(report: dict) -> str:
    """The results table as text: one row per model and source."""
    rows = [("model", "source", "loss", "ppl", "bits/byte")]
    for model, per in report["scores"].items():
        for src, sc in per.items():
            rows.append((model, src, f"{sc['loss']:.3f}", f"{sc['perplexity']:.1f}", f"{sc['bits_per_byte']:.3f}"))
    return format_table(rows, left=2)
