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
from dataclasses import asdict
from pathlib import Path

import torch
from einops import rearrange

from minimistral.arch.config import TINY_CONFIGS, ModelConfig
from minimistral.arch.generate import generate
from minimistral.arch.hub import from_pretrained, load_weights
from minimistral.arch.model import Ministral3, default_device
from minimistral.data.corpus import Corpus, build_corpus, windows
from minimistral.data.math_problems import math_prompt
from minimistral.evaluate.loss import Score, model_score, token_bytes, validation_windows, with_total
from minimistral.evaluate.ngram import NGram, baseline_scores
from minimistral.files import format_table, write_csv, write_json
from minimistral.paths import parent_dir, results_dir
from minimistral.scales import get_scale
from minimistral.train import CHECKPOINT, TrainConfig, Trainer, Windows

PARENT = "tiny-24b"


def pretrain(
    scale: str = "default",
    out: str | Path | None = None,
    device=None,
    corpus: Corpus | None = None,
    compile: bool | None = None,
    max_steps: int | None = None,
    model_config: ModelConfig | None = None,
    init: str | Path | None = None,
    extra_windows: torch.Tensor | None = None,
) -> Path:
    """Train ``tiny-24b`` at ``scale``; resumes from ``out/checkpoint`` if present. Returns the checkpoint dir.

    ``compile``: run the engine under ``torch.compile`` with the fused AdamW (``TrainConfig.compile``);
    default: the scale's setting (on at the default scale, where it works). ``max_steps``: stop after that
    many steps of the same run (a smoke test; running again continues it). Under ``torchrun`` every process
    runs this and the engine trains data-parallel (``minimistral.distributed``). ``model_config``: another
    model trained the same way (the bigger teacher of ``cascade.teachers``); default ``tiny-24b``. ``init``: a
    checkpoint whose weights the run starts from instead of the random initialisation (an earlier phase of
    a curriculum: ``benchmarks/copy_onset.py``); a run that resumes reads its own checkpoint, as always.
    ``extra_windows``: ``[n, seq_len + 1]`` token windows shuffled into the corpus's (an earlier phase's
    synthetic data kept in the mixture: ``benchmarks/retrieval_experiment.py --copy-share``).
    """
    s = get_scale(scale).pretrain
    out = Path(out) if out else parent_dir(scale)
    corpus = corpus or build_corpus()
    torch.manual_seed(0)
    model = Ministral3(model_config or TINY_CONFIGS[PARENT])
    if init is not None:
        load_weights(model, init)
    cfg = TrainConfig(
        steps=s.steps,
        batch_size=s.batch_size,
        lr=s.lr,
        min_lr=s.min_lr,
        warmup_steps=s.warmup_steps,
        eval_every=s.eval_every,
        ckpt_every=s.ckpt_every,
        log_every=s.log_every,
        eval_batches=4,
        compile=s.compile if compile is None else compile,
    )
    # periodic validation: the first eval_batches x batch_size windows, interleaved so every source is in them
    per_source = validation_windows(corpus, s.seq_len, per_source=4 * s.batch_size // len(corpus.val) + 1)
    val = rearrange(torch.stack(list(per_source.values())), "source n t -> (n source) t")
    train_windows = windows(corpus.train, s.seq_len)  # [n, seq_len + 1]
    if extra_windows is not None and (extra_windows.ndim != 2 or extra_windows.shape[1] != s.seq_len + 1):
        raise ValueError(f"extra_windows: shape {tuple(extra_windows.shape)}, want [n, {s.seq_len + 1}] (seq_len + 1)")
    trainer = Trainer(
        model,
        cfg,
        Windows(train_windows if extra_windows is None else torch.cat([train_windows, extra_windows])),
        out,
        val_data=Windows(val),
        device=device or default_device(),
        extra_files={"tokenizer.json": corpus.tokenizer_path},
        desc=f"pretrain {PARENT if model_config is None else 'a bigger teacher'} ({scale})",
    )
    trainer.fit(max_steps)
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
    s = get_scale(scale).pretrain
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
    rows = [
        {"model": model, "source": src, "tokens": sc.tokens, "bytes": sc.bytes, "loss_nats": round(sc.loss, 4),
         "perplexity": round(sc.perplexity, 2), "bits_per_byte": round(sc.bits_per_byte, 4)}
        for model, per in scores.items() for src, sc in per.items()
    ]  # fmt: skip
    write_csv(rows, directory / "pretrain_eval.csv")
    write_json(report, directory / "pretrain_report.json")


def format_scores(report: dict) -> str:
    """The results table as text: one row per model and source."""
    rows = [("model", "source", "loss", "ppl", "bits/byte")]
    for model, per in report["scores"].items():
        for src, sc in per.items():
            rows.append((model, src, f"{sc['loss']:.3f}", f"{sc['perplexity']:.1f}", f"{sc['bits_per_byte']:.3f}"))
    return format_table(rows, left=2)
