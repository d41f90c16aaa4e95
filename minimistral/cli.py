"""``minimistral`` command line: one subcommand per stage.

Bad input (a missing file, a wrong shape, an unknown model_type ...) prints one line
``minimistral: error: ...`` and exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import torch

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


# ----------------------------------------------------------------------------- argument types
def _checked(kind: type, ok, what: str):
    """An argparse type: ``kind(text)`` that satisfies ``ok`` (argparse names the option in its one-line error)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {value:g}")
        return value

    parse.__name__ = what  # argparse's message for a value kind() rejects
    return parse


positive = _checked(int, lambda v: v >= 1, "a positive integer")
non_negative = _checked(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _checked(float, lambda v: v > 0, "a positive number")


def device(text: str) -> str:
    """An argparse type: a device this machine has (``cpu``, ``cuda``, ``cuda:N``, ``mps``)."""
    try:
        d = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device (cpu, cuda, cuda:N, mps)") from None
    if d.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch is built without CUDA" if not torch.backends.cuda.is_built() else "no GPU found"
            raise argparse.ArgumentTypeError(f"{text}: not available ({why}); use cpu")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA devices")
    elif d.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text}: not available (no Apple GPU here); use cpu")
    elif d.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{text}: devices here are cpu, cuda, cuda:N and mps")
    return text


def cmd_params(args) -> None:
    from minimistral.arch.config import CONFIGS, TINY_CONFIGS, TINY_OF_REAL
    from minimistral.arch.params import family_ratios_table, params_table, vision_params_table
    from minimistral.vision.config import PIXTRAL

    if args.family == "tiny":
        print(params_table(TINY_CONFIGS))
        print("\nratios, tiny vs real:")
        print(family_ratios_table(TINY_CONFIGS, CONFIGS, TINY_OF_REAL))
    else:
        print(params_table(CONFIGS))
        print("\nwith image understanding (the same Pixtral encoder in every model, one projector each):")
        print(vision_params_table(CONFIGS, PIXTRAL))


def cmd_generate(args) -> None:
    from minimistral.arch.generate import generate
    from minimistral.arch.hub import from_pretrained, load_config, load_vision_config
    from minimistral.arch.model import default_device
    from minimistral.data.tokenizer import load_tokenizer
    from minimistral.errors import ImageError
    from minimistral.vision.images import image_prompt, read_images

    load_config(args.checkpoint)  # fail fast on a wrong directory, before reading any weights
    vision = load_vision_config(args.checkpoint)
    if args.image and vision is None:
        raise ImageError(f"{args.checkpoint}: --image needs a vision-language (mistral3) checkpoint; text-only")
    images = {}
    if args.image:
        pixel_values, image_sizes = read_images(args.image, vision)
        images = dict(pixel_values=pixel_values, image_sizes=image_sizes)
    tok = load_tokenizer(args.checkpoint)
    device = torch.device(args.device) if args.device else default_device()
    model = from_pretrained(args.checkpoint, dtype=DTYPES.get(args.dtype), device=device)
    if images:
        ids = image_prompt(tok.encode(args.prompt, bos=False), images["image_sizes"], vision, tok.bos_id)
    else:
        ids = tok.encode(args.prompt)
    ids = torch.tensor([ids], device=device)
    limit, total = model.config.max_position_embeddings, ids.shape[1] + args.max_new_tokens
    if total > limit:  # allowed, as transformers allows it, but said: RoPE extrapolates past the trained window
        print(f"minimistral: note: the prompt's {ids.shape[1]} tokens + --max-new-tokens {args.max_new_tokens} "
              f"= {total} positions, past this model's {limit} (max_position_embeddings)", file=sys.stderr)  # fmt: skip
    if args.num_samples > 1 and args.temperature == 0:
        raise ValueError("--num-samples above 1 needs --temperature above 0 (greedy gives one continuation)")
    out = generate(model, ids, args.max_new_tokens, args.temperature, args.top_p, args.seed, eos_token_id=tok.eos_id,
                   num_return_sequences=args.num_samples, **images)  # fmt: skip
    for i, row in enumerate(out[:, ids.shape[1] :].tolist()):  # the prompt read once, continued n times
        if args.num_samples > 1:
            print(f"--- sample {i + 1} of {args.num_samples}")
        print(args.prompt + tok.decode([t for t in row if t != tok.eos_id]))


def cmd_convert(args) -> None:
    from minimistral.arch.hub import from_pretrained, save_pretrained

    src, dst = Path(args.checkpoint), Path(args.out)
    model = from_pretrained(src, dtype=DTYPES.get(args.dtype), text_only=True)
    shard = int(args.max_shard_size_mb * 2**20) if args.max_shard_size_mb else None
    save_pretrained(model, dst, max_shard_size=shard)
    _copy_tokenizer(src, dst)
    print(f"wrote {dst} ({model.config.to_hf_dict()['model_type']}, {model.num_parameters():,} parameters)")


def cmd_pretrain(args) -> None:
    import json

    from minimistral.distributed import rank_world
    from minimistral.paths import results_dir
    from minimistral.pretrain import evaluate_parent, format_scores, pretrain
    from minimistral.scales import get_scale

    checkpoint = pretrain(args.scale, out=args.out, device=args.device, compile=args.compile, max_steps=args.max_steps)
    step = json.loads((checkpoint / "trainer_state.json").read_text())["step"]
    if rank_world()[0] != 0:
        return  # under torchrun: rank 0 reports
    if step < get_scale(args.scale).pretrain.steps:
        print(f"stopped at step {step} (--max-steps); run again without it to continue\ncheckpoint: {checkpoint}")
        return
    report = evaluate_parent(checkpoint, args.scale, device=args.device)
    print(format_scores(report))
    print(f"checkpoint: {checkpoint}\nresults: {results_dir(args.scale)}")


def cmd_prune(args) -> None:
    from minimistral.arch.hub import from_pretrained, load_config, save_pretrained
    from minimistral.arch.model import default_device
    from minimistral.arch.params import count_parameters
    from minimistral.data.tokenizer import load_tokenizer
    from minimistral.prune.calibrate import calibration_batches
    from minimistral.prune.heuristics import PER_SITE_GAIN, prune
    from minimistral.prune.streaming import CheckpointReader, available_memory, prune_checkpoint, should_stream

    config = load_config(args.checkpoint)  # fail fast on a wrong directory or a size it does not have
    for option, asked, has in (("--layers", args.layers, config.num_hidden_layers),
                               ("--hidden", args.hidden, config.hidden_size),
                               ("--ffn", args.ffn, config.intermediate_size)):  # fmt: skip
        if asked is not None and asked > has:
            raise ValueError(f"{option} {asked}: the checkpoint has {has}; pruning keeps at most that")
    tok = load_tokenizer(args.checkpoint)
    batches = calibration_batches(tok, args.calib, args.calib_tokens, args.seq_len)
    device = torch.device(args.device) if args.device else default_device()
    dtype = DTYPES.get(args.dtype)
    shape = {"num_layers": args.layers, "hidden_size": args.hidden, "intermediate_size": args.ffn}
    options = {
        "layer_score": args.layer_score,
        "tie_word_embeddings": args.tie,
        "per_site_gain": PER_SITE_GAIN if args.per_site_gain is None else args.per_site_gain,
    }
    stream = args.low_memory
    if stream is None:  # automatic: stream when the in-memory path's peak would not fit (should_stream)
        stream = should_stream(CheckpointReader(args.checkpoint, dtype).weight_bytes(), available_memory())
    if stream:
        before = count_parameters(load_config(args.checkpoint))
        c = prune_checkpoint(args.checkpoint, args.out, batches, **shape, **options, dtype=dtype, device=device)
        after = count_parameters(c)
    else:
        model = from_pretrained(args.checkpoint, dtype=dtype, device=device)
        before = model.num_parameters()
        pruned = prune(model, batches, **shape, **options)
        del model
        save_pretrained(pruned, args.out)
        c, after = pruned.config, pruned.num_parameters()
    _copy_tokenizer(Path(args.checkpoint), Path(args.out))
    print(
        f"pruned to {c.num_hidden_layers} layers, hidden {c.hidden_size}, FFN {c.intermediate_size}: "
        f"{before:,} -> {after:,} parameters ({'one layer at a time' if stream else 'in memory'}); wrote {args.out}"
    )


def _copy_tokenizer(src: Path, dst: Path) -> None:
    from minimistral.data.tokenizer import tokenizer_files

    for name, file in tokenizer_files(src).items():
        if src.resolve() != dst.resolve():
            shutil.copy2(file, dst / name)


def cmd_prune_study(args) -> None:
    from minimistral.paths import parent_dir, results_dir
    from minimistral.prune.study import run_study

    checkpoint = args.checkpoint or parent_dir(args.scale) / "checkpoint"
    run_study(checkpoint, args.scale, device=args.device)
    print(f"wrote pruning_per_step.csv, pruning_full.csv, pruning_vs_ratio.csv to {results_dir(args.scale)}")


def cmd_cascade(args) -> None:
    from minimistral.cascade.claims import run_claims
    from minimistral.cascade.pipeline import Cascade, stage_named
    from minimistral.cascade.report import format_summary, report
    from minimistral.distributed import rank_world
    from minimistral.longctx.study import run_longctx_study
    from minimistral.paths import cascade_dir, parent_dir

    if args.restart_from:
        stage_named(args.restart_from)  # an unknown name fails before anything runs
    parent = Path(args.parent) if args.parent else parent_dir(args.scale) / "checkpoint"
    if not (parent / "config.json").is_file():
        raise FileNotFoundError(f"no parent checkpoint at {parent}: run `minimistral pretrain --scale {args.scale}`")
    cascade = Cascade(parent, args.out or cascade_dir(args.scale), args.scale, device=args.device)
    if args.restart_from:
        cascade.restart_from(args.restart_from)
    cascade.run()
    if rank_world()[1] > 1:  # the claims train single runs and the report writes tables: one process
        if rank_world()[0] == 0:
            print(f"the cascade's checkpoints are in {cascade.root}; run `minimistral cascade` again in one process "
                  "for the claims and the report (each finished stage returns at once)")  # fmt: skip
        return
    if not args.no_claims:
        run_claims(cascade)
    longctx = None if args.no_longctx else run_longctx_study(cascade, args.scale)
    print(format_summary(report(cascade, args.scale, longctx)))


def cmd_reproduce(args) -> None:
    from minimistral.cascade.report import format_summary
    from minimistral.distributed import rank_world
    from minimistral.reproduce import reproduce, times_table

    if rank_world()[1] > 1:
        raise ValueError("reproduce runs in one process (its studies evaluate and train single runs); under torchrun "
                         "run the training verbs: pretrain, cascade, vision, posttrain, distill")  # fmt: skip
    tables = reproduce(args.scale, from_step=args.from_step, device=args.device, until=args.until)
    if tables is not None:  # `score` ran (or found its tables)
        print(format_summary(tables))
    print(f"\nWall time of each step ({args.scale} scale, the latest run of each):")
    print(times_table(args.scale))


def cmd_posttrain(args) -> None:
    """One post-training stage (paper §4) from a checkpoint, resumable, torchrun-ready: the driver's own steps."""
    from minimistral.data.tokenizer import check_same_tokenizer
    from minimistral.distributed import rank_world
    from minimistral.posttrain import pipeline as pp
    from minimistral.posttrain.pwrm import CALIBRATION

    start, out, need = Path(args.checkpoint), Path(args.out), POSTTRAIN_NEEDS[args.stage]
    for option in need:
        if getattr(args, option) is None:
            raise ValueError(f"posttrain {args.stage}: --{option} is required")
    if not (start / "config.json").is_file():
        raise FileNotFoundError(f"--checkpoint {start}: no config.json (an HF-format checkpoint directory)")
    if args.teacher is not None:  # its logits are compared id by id with the student's
        check_same_tokenizer(start, args.teacher)
    if args.stage == "odpo" and not (Path(args.judge) / CALIBRATION).is_file():
        raise ValueError(f"--judge {args.judge}: not a pairwise reward model from `posttrain pwrm` (no {CALIBRATION})")
    scale, seed, device = args.scale, args.seed, args.device
    if args.stage == "teacher":
        checkpoint = pp.teach(start, out, scale, device)
    elif args.stage == "sft":
        checkpoint = pp.sft_child(start, Path(args.teacher), out, scale, args.ntp_weight, seed, device)
    elif args.stage == "instruct-sft":
        checkpoint = pp.instruct_sft(start, Path(args.teacher), out, scale, seed, device)
    elif args.stage in ("stem-rl", "general-rl"):
        checkpoint = pp.rl_stage(start, out, scale, args.stage.removesuffix("-rl"), seed, device)
    elif args.stage == "pwrm":  # start: the stronger teacher the PWRM is fine-tuned from
        policies = [(Path(d), False) for d in args.policy] + [(Path(d), True) for d in args.reasoning_policy]
        if not policies:
            raise ValueError("posttrain pwrm: give at least one --policy or --reasoning-policy checkpoint")
        checkpoint = pp.reward_model(policies, start, out, scale, device)
    else:  # odpo
        checkpoint = pp.odpo_stage(start, Path(args.judge), out, scale, args.thinking, seed, device=device)
    if rank_world()[0] == 0:
        print(f"wrote {checkpoint}")


POSTTRAIN_NEEDS = {  # stage -> options it requires besides --checkpoint and --out
    "teacher": (), "sft": ("teacher",), "instruct-sft": ("teacher",), "stem-rl": (), "general-rl": (), "pwrm": (),
    "odpo": ("judge",),
}  # fmt: skip


def cmd_vision(args) -> None:
    """A child's image understanding (paper §2): the teacher's ViT copied and frozen, a new projector by KD."""
    from minimistral.arch.hub import load_vision_config
    from minimistral.distributed import rank_world
    from minimistral.vision.study import see_child

    for option in ("checkpoint", "teacher"):
        if not (Path(getattr(args, option)) / "config.json").is_file():
            raise FileNotFoundError(f"--{option} {getattr(args, option)}: no config.json (an HF checkpoint directory)")
    if load_vision_config(args.teacher) is None:
        raise ValueError(f"--teacher {args.teacher}: a text-only checkpoint; the teacher must read images (mistral3)")
    checkpoint = see_child(Path(args.checkpoint), Path(args.teacher), Path(args.out), args.scale, args.seed,
                           args.device)  # fmt: skip
    if rank_world()[0] == 0:
        print(f"wrote {checkpoint}")


def cmd_plan(args) -> None:
    from minimistral.plan import KL_CHUNK, Job, report

    job = Job(
        args.student,
        args.gpus,
        seq=args.seq,
        batch=args.batch,
        teacher=args.teacher,
        teacher_dtype=DTYPES[args.teacher_dtype],
        chunk_size=KL_CHUNK if args.chunk_size is None else args.chunk_size,
    )
    print(report(job, args.gpu_memory))


def cmd_teachers(args) -> None:
    from minimistral.cascade.teachers import teacher_ablation
    from minimistral.evaluate.paper_tables import table_text
    from minimistral.paths import results_dir

    print(table_text(teacher_ablation(args.scale, bigger=args.bigger, device=args.device)))
    print(f"wrote {results_dir(args.scale) / 'teacher_ablation.csv'}")


def cmd_distill(args) -> None:
    from minimistral.distill import distill_checkpoint
    from minimistral.distributed import rank_world
    from minimistral.train import TrainConfig

    cfg = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
        min_lr=args.lr / 10, warmup_steps=min(args.warmup_steps, args.steps), eval_every=args.eval_every,
        ckpt_every=args.ckpt_every, log_every=args.log_every,
    )  # fmt: skip
    out = distill_checkpoint(
        args.student, args.teacher, args.out, cfg, data=args.data, tokens=args.tokens, seq_len=args.seq_len,
        teacher_dtype=DTYPES[args.teacher_dtype], device=args.device, max_steps=args.max_steps,
    )  # fmt: skip
    if rank_world()[0] == 0:
        print(f"wrote {out}")


def cmd_tokenize(args) -> None:
    from minimistral.data.corpus import save_windows, text_windows
    from minimistral.data.tokenizer import load_tokenizer

    if not args.out.endswith(".safetensors"):
        raise ValueError(f"--out {args.out}: name the windows file *.safetensors")
    tok = load_tokenizer(args.checkpoint)
    windows = text_windows(tok, args.data, args.tokens, args.seq_len + 1)  # [n, seq_len + 1]
    save_windows(windows, args.out, tok, args.data)
    print(f"wrote {args.out}: {len(windows):,} windows of {args.seq_len + 1} tokens ({windows.numel():,} tokens)")


ENGINE_FLAGS = {"fsdp": "MINIMISTRAL_FSDP", "activation_checkpointing": "MINIMISTRAL_ACTIVATION_CHECKPOINTING"}


def _engine(s: argparse.ArgumentParser) -> None:
    """The engine's how-to-compute options (minimistral.train.TrainConfig), for every stage the verb trains."""
    s.add_argument("--fsdp", action="store_true", help="under torchrun: shard model and teacher over the ranks (FSDP2)")
    s.add_argument(
        "--activation-checkpointing", action="store_true", help="recompute each block in backward (less memory)"
    )


def _scale_and_device(s: argparse.ArgumentParser) -> None:
    s.add_argument("--scale", choices=("ci", "default"), default="default", help="minimistral/scales.py")
    s.add_argument("--device", type=device, default=None, help="default: cuda, else mps, else cpu")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minimistral", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("params", help="shapes and exact parameter counts of a model family")
    s.add_argument("--family", choices=("real", "tiny"), default="real")
    s.set_defaults(func=cmd_params)

    s = sub.add_parser("generate", help="continue a prompt with a checkpoint's model and tokenizer")
    s.add_argument("--checkpoint", required=True, help="HF-format directory with tekken.json or tokenizer.json")
    s.add_argument("--prompt", required=True)
    s.add_argument(
        "--image", action="append", default=[], metavar="FILE", help="an image before the prompt (repeatable)"
    )
    s.add_argument("--max-new-tokens", type=positive, default=64)
    s.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    s.add_argument("--top-p", type=float, default=1.0)
    s.add_argument("--num-samples", type=positive, default=1, help="continuations of the prompt (with --temperature)")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: as stored")
    s.add_argument("--device", type=device, default=None, help="default: cuda, else mps, else cpu")
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("pretrain", help="pretrain the tiny parent (tiny-24b) on real text and math; resumes")
    _scale_and_device(s)
    s.add_argument("--out", default=None, help="run directory (default runs/parent-<scale>)")
    s.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile + fused AdamW (default: on at the default scale where it works)",
    )
    s.add_argument(
        "--max-steps", type=positive, default=None, help="stop after this many steps (same schedule; resumes)"
    )
    _engine(s)
    s.set_defaults(func=cmd_pretrain)

    s = sub.add_parser(
        "distill",
        help="distil a checkpoint (e.g. a pruned real one) from a teacher checkpoint, on text; torchrun-ready; resumes",
    )
    s.add_argument("--student", required=True, help="HF-format directory with its tokenizer (e.g. from prune)")
    s.add_argument("--teacher", required=True, help="HF-format directory, the same vocabulary")
    s.add_argument("--out", required=True, help="run directory; the student lands in OUT/checkpoint")
    s.add_argument("--data", default="mixture", help="shakespeare, milton, math, mixture, a UTF-8 .txt file, "
                   "or a .safetensors file from `minimistral tokenize`")  # fmt: skip
    s.add_argument("--tokens", type=positive, default=1_000_000, help="tokens of --data to read")
    s.add_argument("--seq-len", type=positive, default=4096)
    s.add_argument("--steps", type=positive, default=1000)
    s.add_argument("--batch-size", type=positive, default=8, help="sequences per micro-batch over all processes")
    s.add_argument("--grad-accum", type=positive, default=1)
    s.add_argument("--lr", type=float, default=1e-4, help="peak; cosine to a tenth of it")
    s.add_argument("--warmup-steps", type=non_negative, default=50)
    s.add_argument("--eval-every", type=positive, default=100)
    s.add_argument("--ckpt-every", type=positive, default=100)
    s.add_argument("--log-every", type=positive, default=10)
    s.add_argument(
        "--max-steps", type=positive, default=None, help="stop after this many steps (same schedule; resumes)"
    )
    s.add_argument("--teacher-dtype", choices=sorted(DTYPES), default="bf16")
    s.add_argument("--device", type=device, default=None, help="default: cuda, else mps, else cpu")
    _engine(s)
    s.set_defaults(func=cmd_distill)

    s = sub.add_parser(
        "tokenize",
        help="encode a text corpus once with a checkpoint's tokenizer, as windows `distill --data` reads",
    )
    s.add_argument("--checkpoint", required=True, help="the directory whose tokenizer to use (the student's)")
    s.add_argument("--data", required=True, help="shakespeare, milton, math, mixture, or a UTF-8 .txt file")
    s.add_argument("--tokens", type=positive, default=1_000_000, help="tokens of --data to encode")
    s.add_argument("--seq-len", type=positive, default=4096, help="the sequence length distill will train on")
    s.add_argument("--out", required=True, help="FILE.safetensors")
    s.set_defaults(func=cmd_tokenize)

    s = sub.add_parser("prune", help="prune a checkpoint: layers, then hidden size, then FFN (paper Algorithm 2)")
    s.add_argument("--checkpoint", required=True, help="any directory from_pretrained reads, with its tokenizer")
    s.add_argument("--out", required=True)
    s.add_argument("--layers", type=positive, default=None, help="keep this many layers")
    s.add_argument("--hidden", type=positive, default=None, help="new hidden size (PCA rotation)")
    s.add_argument("--ffn", type=positive, default=None, help="new FFN width")
    s.add_argument("--calib", default="mixture", help="shakespeare, milton, math, mixture, or a .txt file")
    s.add_argument("--calib-tokens", type=positive, default=32768)
    s.add_argument("--seq-len", type=positive, default=256)
    s.add_argument(
        "--layer-score",
        default="out/in",
        help="out/in, in/out, block_influence, counterfactual, counterfactual_iterative, magnitude, random",
    )
    s.add_argument(
        "--tie",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tie the pruned model's head to its embeddings (--no-tie: untie); default: as the checkpoint",
    )
    s.add_argument(
        "--per-site-gain",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rescale each norm gain by its own kept-energy share, not the pooled one (default: the library's)",
    )
    s.add_argument(
        "--low-memory",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read and prune one layer at a time (default: when the model is over a fifth of the available memory)",
    )
    s.add_argument("--dtype", choices=sorted(DTYPES), default=None)
    s.add_argument("--device", type=device, default=None)
    s.set_defaults(func=cmd_prune)

    s = sub.add_parser("prune-study", help="every pruning heuristic and baseline on the tiny parent, as CSV tables")
    _scale_and_device(s)
    s.add_argument("--checkpoint", default=None, help="default: runs/parent-<scale>/checkpoint")
    s.set_defaults(func=cmd_prune_study)

    s = sub.add_parser(
        "cascade",
        help="Cascade Distillation: parent -> tiny-14b/8b/3b (prune, short and long KD), the claims at equal "
        "tokens, the long-context study, tables; resumes from any stage",
    )
    _scale_and_device(s)
    s.add_argument("--parent", default=None, help="default: runs/parent-<scale>/checkpoint")
    s.add_argument("--out", default=None, help="run directory (default runs/cascade-<scale>)")
    s.add_argument("--restart-from", default=None, metavar="STAGE", help="retrain this stage and every later one")
    s.add_argument("--no-claims", action="store_true", help="skip the equal-token comparisons")
    s.add_argument("--no-longctx", action="store_true", help="skip the long-context ablation and measurements")
    _engine(s)
    s.set_defaults(func=cmd_cascade)

    s = sub.add_parser(
        "reproduce",
        help="the whole reproduction top to bottom: pretrain, prune study, cascade, claims, long context, vision, "
        "post-training (SFT, GRPO, PWRM, ODPO), tables; continues from what is done",
    )
    _scale_and_device(s)
    s.add_argument("--from", dest="from_step", default=None, metavar="STEP", help="redo this step and every later one")
    s.add_argument("--until", default=None, metavar="STEP", help="stop after this step (e.g. score: the Base models)")
    _engine(s)
    s.set_defaults(func=cmd_reproduce)

    s = sub.add_parser(
        "posttrain",
        help="one post-training stage from a checkpoint (the driver's own step; resumes; torchrun-ready): "
        "teacher, sft, instruct-sft, stem-rl, general-rl, pwrm, odpo",
    )
    s.add_argument("stage", choices=tuple(POSTTRAIN_NEEDS))
    _scale_and_device(s)
    s.add_argument(
        "--checkpoint", required=True, help="the checkpoint the stage starts from (for pwrm: the teacher it tunes)"
    )
    s.add_argument("--out", required=True, help="run directory; the model lands in OUT/checkpoint")
    s.add_argument("--teacher", default=None, help="sft, instruct-sft: the stronger teacher (KL on the response)")
    s.add_argument("--judge", default=None, help="odpo: the pairwise reward model's checkpoint (from pwrm)")
    s.add_argument("--thinking", action="store_true", help="odpo: a Reasoning model (thinking stripped to judge)")
    s.add_argument("--ntp-weight", type=float, default=0.0, help="sft: 1 = plain next-token SFT, 0 = KL only")
    s.add_argument("--policy", action="append", default=[], metavar="DIR", help="pwrm: a policy that answers at once")
    s.add_argument(
        "--reasoning-policy", action="append", default=[], metavar="DIR", help="pwrm: a policy that thinks first"
    )
    s.add_argument("--seed", type=int, default=0)
    _engine(s)
    s.set_defaults(func=cmd_posttrain)

    s = sub.add_parser(
        "vision",
        help="a child's image understanding: the teacher's ViT copied and frozen, a new projector distilled "
        "(the driver's <child>-vision step; resumes; torchrun-ready)",
    )
    _scale_and_device(s)
    s.add_argument("--checkpoint", required=True, help="the child's text checkpoint (its Base)")
    s.add_argument("--teacher", required=True, help="a mistral3 checkpoint that reads images (the vision parent)")
    s.add_argument("--out", required=True, help="run directory; the model lands in OUT/checkpoint")
    s.add_argument("--seed", type=int, default=0)
    _engine(s)
    s.set_defaults(func=cmd_vision)

    s = sub.add_parser(
        "teachers",
        help="the teacher ablations (paper Figures 3-4): tiny-3b Short distilled from other teachers, scored",
    )
    _scale_and_device(s)
    s.add_argument("--bigger", action="store_true", help="also pretrain a bigger teacher and distil from it (long)")
    _engine(s)
    s.set_defaults(func=cmd_teachers)

    s = sub.add_parser(
        "plan",
        help="memory per device of training a model, alone or distilled from a teacher, under DDP and FSDP2",
    )
    s.add_argument("--student", required=True, help="a name of arch.config's CONFIGS or TINY_CONFIGS")
    s.add_argument("--teacher", default=None, help="distil from this model (default: plain training)")
    s.add_argument("--gpus", type=int, required=True, help="devices; FSDP2 shards over all of them")
    s.add_argument("--gpu-memory", type=float, required=True, help="GB per device (1 GB = 1e9 bytes)")
    s.add_argument("--seq", type=int, default=16384, help="tokens per sequence")
    s.add_argument("--batch", type=int, default=1, help="sequences per device per micro-batch")
    s.add_argument("--teacher-dtype", choices=sorted(DTYPES), default="bf16", help="the teacher's weights")
    s.add_argument("--chunk-size", type=int, default=None, help="tokens per KL chunk (default: DistillLoss's, 1024)")
    s.set_defaults(func=cmd_plan)

    s = sub.add_parser(
        "convert",
        help="rewrite a checkpoint as a text-only HF directory (mistral3 -> its language model; dtype; shards)",
    )
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--dtype", choices=sorted(DTYPES), default=None)
    s.add_argument("--max-shard-size-mb", type=positive_float, default=None)
    s.set_defaults(func=cmd_convert)
    return p


def check_out(args) -> None:
    """Before any work: ``--out`` must be something the verb can write, and never the checkpoint it reads."""
    if getattr(args, "out", None) is None:
        return
    out = Path(args.out)
    if args.command == "tokenize":
        if out.is_dir():
            raise ValueError(f"--out {out}: a directory; name the windows file, e.g. {out / 'corpus.safetensors'}")
        if out.exists() and not _is_windows_file(out):
            raise ValueError(
                f"--out {out}: exists and is not a windows file from `minimistral tokenize`; not overwriting it"
            )
    elif out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a directory")
    elif args.command in ("prune", "convert") and out.resolve() == Path(args.checkpoint).resolve():
        raise ValueError(f"--out {out}: the same directory as --checkpoint; writing there would overwrite the source")
    ancestor = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
    if ancestor != out.absolute() and not ancestor.is_dir():
        raise ValueError(f"--out {out}: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK):
        raise ValueError(f"--out {out}: no permission to write in {ancestor}")


def _is_windows_file(file: Path) -> bool:
    from minimistral.data.corpus import windows_header

    try:
        return "tokenizer_sha256" in windows_header(file)[2]
    except ValueError:  # anything unreadable is not a windows file
        return False


def _error(message: str) -> int:
    """Print ``minimistral: error: MESSAGE`` on a line of its own and return exit status 2. A progress bar
    the error interrupted is closed first (it would otherwise hold the line the message lands on)."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
    print(f"minimistral: error: {message}", file=sys.stderr)
    return 2


def guarded(run: Callable[[], object]) -> int:
    """Call ``run()``; a bad checkpoint, data file, resume or argument value ends in one line on stderr
    (``minimistral: error: ...``) and exit status 2 instead of a traceback, an interrupt (Ctrl-C, or SIGTERM:
    ``kill``, Slurm's time limit, torchrun stopping) in 130 after the training it stops wrote its checkpoint.
    The CLI and the scripts in ``benchmarks/`` go through here, so every entry point fails the same way."""
    from minimistral.data.sources import DataError
    from minimistral.errors import CheckpointError
    from minimistral.train import ResumeError, sigterm_interrupts

    try:
        with sigterm_interrupts():
            run()
    except (CheckpointError, DataError, ResumeError, FileNotFoundError, ValueError) as exc:
        return _error(str(exc))
    except OSError as exc:  # a path that cannot be written after all (a full disk, permissions changed)
        return _error(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
    except KeyboardInterrupt:
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    from minimistral.distributed import finish, init_from_env

    args = build_parser().parse_args(argv)
    for option, variable in ENGINE_FLAGS.items():  # read by TrainConfig in every stage the command runs
        if getattr(args, option, False):
            os.environ[variable] = "1"
    init_from_env()  # under torchrun: join the process group (minimistral.distributed)
    try:
        return guarded(lambda: (check_out(args), args.func(args)))
    finally:
        finish()


if __name__ == "__main__":
    sys.exit(main())
