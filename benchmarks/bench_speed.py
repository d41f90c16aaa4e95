"""Speed of minimistral against transformers on CPU, fp32, with a ~10M-parameter Ministral 3 shaped model.

On CUDA (``--device cuda``, the default where there is one) the same benchmark runs on the GPU: training
under bf16 autocast with the fused AdamW kernel (what the engine does there), inference in fp32, every
timed call between two ``torch.cuda.synchronize``, MFU against the bf16 matmul peak measured on the
GPU in the same run (or ``--peak-tflops``, the datasheet's dense bf16 figure). No GPU was lent to this
project's machines: the CUDA path is written, not yet run.

Method
------
* Same weights: one ``Ministral3`` is built under a fixed seed and its state dict is loaded
  (strictly) into transformers' ``Ministral3ForCausalLM``; both see the same inputs.
* Same process, same thread count, same dtype (fp32), same device (CPU).
* Interleaved repeats: every repeat times ours and theirs back to back, and the order
  alternates from one repeat to the next, so slow drift (clock scaling, other processes,
  allocator state) falls on both sides alike.
* Warm-up calls are discarded; the reported figure is the median of the repeats, and the ratio
  is median(ours) / median(theirs). Two cross-checks are printed beside it: "paired", the median
  over rounds of the ratio within a round (both sides timed seconds apart), and "best", the ratio
  of the fastest repeats (what ``timeit`` recommends). On a shared machine another process can
  stall whole repeats (with all cores in use, an OpenMP barrier waits for a descheduled thread),
  so a verdict is PASS or BELOW TARGET only when all three ratios agree, else BORDERLINE: the
  ratio sits at the target within the noise (rerun on a quiet machine or with more ``--repeats``).
  The 1-minute load average is printed for the same reason.

Metrics (all tokens/s, higher is better)
-----------------------------------------
1. training: forward, cross-entropy, backward, ``AdamW.step``, ``zero_grad`` on ``batch x seq`` tokens;
   each side trains its own copy of the weights with its own optimizer.
2. prefill: one ``inference_mode`` forward over ``batch x seq`` tokens (full logits).
3. decode: greedy generation of N new tokens at batch 1 with the KV cache, timed over the whole
   call (the short prompt's prefill included), ``minimistral.generate`` against ``hf.generate``.
   Both outputs are checked to hold N new tokens, and compared token by token.
4. rollouts: GRPO's sampling, G responses to each of 4 prompts of different lengths (half to twice the
   decode prompt) at temperature 1 with the KV cache (``minimistral.posttrain.rollouts.sample``, what each
   RL iteration runs: one left-padded batch) against ``hf.generate(do_sample=True)`` on the same batch,
   left-padded, with its attention mask; tokens = 4 x G x N (a row that writes ``</s>`` early still rides
   along in the batch, on both sides).
5. across shapes: training and greedy decoding at batch 1 and batch 8 again on a 6-layer, 256-wide and a
   12-layer, 512-wide model (``shape_configs``), every ratio printed, the decoded tokens compared row by row.

Model-FLOPs utilisation (MFU)
-----------------------------
Achieved training FLOP/s over the fp32 matmul peak measured on the same machine in the same run
(the best of square matmuls of several sizes). Training FLOPs per token are counted as
``6 x (parameters of every matmul: attention, FFN, head; not the embedding lookup)`` plus causal
attention ``6 x layers x q_width x seq / 2`` (QK^T and PV, forward and backward, only the unmasked
half, which is what a causal kernel computes). Measured for the bench config above and for the
pretraining workload (``tiny-24b`` at 16 x 256, what ``minimistral pretrain`` runs), eager and
compiled (``TrainConfig(compile=True)``: ``torch.compile`` of the model plus the fused AdamW kernel,
which fuses the elementwise work eager PyTorch runs as separate passes over memory).

Run ``python benchmarks/bench_speed.py`` (``--quick`` for a smoke run, ``--json PATH`` to save results).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F
import transformers

import minimistral
from minimistral import Ministral3, ModelConfig
from minimistral.cli import guarded

TARGETS = {"training": 1.0, "prefill": None, "decode": 1.5, "rollouts": None}  # minimum ratio ours / transformers
MFU_TARGET = 0.5
DEVICE = torch.device("cpu")  # set once by main() from --device


def cuda() -> bool:
    return DEVICE.type == "cuda"


def sync() -> None:
    """Wait for the device's queued work (a GPU call returns before its kernels finish); nothing on the CPU."""
    if cuda():
        torch.cuda.synchronize(DEVICE)  # this device's queue, not the current one's (--device cuda:1)
    elif DEVICE.type == "mps":
        torch.mps.synchronize()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small shapes and few repeats: a smoke run of seconds")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per metric (default 9, quick 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per side before timing")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    p.add_argument("--peak-tflops", type=float, default=None, help="MFU against this peak (default: measured)")
    return p.parse_args(argv)


def bench_config() -> ModelConfig:
    """Ministral 3 shaped, ~10M parameters: GQA 8 q / 2 kv heads, YaRN and the query temperature on.

    The original window is made short (128) so that the temperature actually changes inside
    every sequence timed here (training 256, prefill 512, decode positions 16..143).
    """
    return ModelConfig(
        vocab_size=8192,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=32,
        tie_word_embeddings=False,
        max_position_embeddings=2048,  # = yarn_factor x original window
        rope_theta=1e6,
        yarn_factor=16.0,
        original_max_position_embeddings=128,
        llama_4_scaling_beta=0.1,
        eos_token_id=None,  # no early stop anywhere: both sides must emit every requested token
    )


def shape_configs(quick: bool) -> dict[str, ModelConfig]:
    """The shapes every ratio must hold on: layers x width (8 query / 2 KV heads, FFN 3x the width)."""
    base = bench_config()
    dims = ((2, 128),) if quick else ((6, 256), (12, 512))
    return {
        f"{layers}x{width}": base.replace(
            num_hidden_layers=layers, hidden_size=width, intermediate_size=3 * width, head_dim=width // 8
        )
        for layers, width in dims
    }


def shapes(quick: bool) -> dict:
    """Batch and sequence sizes per metric."""
    if quick:
        return {"train": (2, 64), "prefill": (1, 128), "prompt": 16, "new_tokens": 16, "group": 4, "repeats": 2}
    return {"train": (8, 256), "prefill": (1, 512), "prompt": 16, "new_tokens": 128, "group": 8, "repeats": 9}


def build_models(cfg: ModelConfig, seed: int) -> tuple[Ministral3, torch.nn.Module]:
    """Our model under ``seed`` and transformers' with the very same weights."""
    torch.manual_seed(seed)
    ours = Ministral3(cfg).float().to(DEVICE)
    fields = cfg.to_hf_dict()  # ministral3 with the temperature, else mistral (the plain-RoPE parent)
    hf_config = transformers.AutoConfig.for_model(fields.pop("model_type"), **fields)
    theirs = transformers.AutoModelForCausalLM.from_config(hf_config).float().to(DEVICE)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours.eval(), theirs.eval()


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each function: warm-ups first, then ``repeats`` rounds in alternating order."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            sync()
            start = time.perf_counter()
            fns[name]()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def train_step_fn(model: torch.nn.Module, ids: torch.Tensor, hf: bool, compiled: bool = False) -> Callable[[], float]:
    """One optimiser step on a private copy of ``model``: next-token cross-entropy, backward, AdamW, zero_grad.

    ``compiled``: what ``TrainConfig(compile=True)`` runs, ``torch.compile`` of the model and the fused AdamW.
    On CUDA, both sides as the engine trains there: bf16 autocast and the fused AdamW.
    """
    model = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if compiled or cuda() else {}))
    run = torch.compile(model) if compiled else model

    def step() -> float:
        with torch.autocast("cuda", dtype=torch.bfloat16) if cuda() else nullcontext():
            logits = run(ids).logits if hf else run(ids)
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


def prefill_fn(model: torch.nn.Module, ids: torch.Tensor, hf: bool) -> Callable[[], torch.Tensor]:
    @torch.inference_mode()
    def prefill() -> torch.Tensor:
        return model(ids).logits if hf else model(ids)

    return prefill


def bench_training(ours, theirs, cfg, batch, seq, repeats, warmup) -> dict:
    ids = torch.randint(cfg.vocab_size, (batch, seq), device=DEVICE)
    fns = {"ours": train_step_fn(ours, ids, hf=False), "theirs": train_step_fn(theirs, ids, hf=True)}
    return per_token(interleaved(fns, repeats, warmup), batch * seq)


def bench_prefill(ours, theirs, cfg, batch, seq, repeats, warmup) -> dict:
    ids = torch.randint(cfg.vocab_size, (batch, seq), device=DEVICE)
    fns = {"ours": prefill_fn(ours, ids, hf=False), "theirs": prefill_fn(theirs, ids, hf=True)}
    return per_token(interleaved(fns, repeats, warmup), batch * seq)


def bench_decode(ours, theirs, cfg, prompt_len, new_tokens, repeats, warmup, batch: int = 1) -> dict:
    """Greedy decoding of ``batch`` prompts at once; also checks that both sides emit ``new_tokens`` identical tokens
    per row (tokens/s counts every row's)."""
    ids = torch.randint(cfg.vocab_size, (batch, prompt_len), device=DEVICE)
    mask = torch.ones_like(ids)  # explicit: a random prompt may contain the pad id, which HF would mask
    outputs: dict[str, torch.Tensor] = {}

    def run_ours():
        outputs["ours"] = minimistral.generate(ours, ids, max_new_tokens=new_tokens)

    def run_theirs():
        outputs["theirs"] = theirs.generate(
            ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
        )

    result = per_token(interleaved({"ours": run_ours, "theirs": run_theirs}, repeats, warmup), batch * new_tokens)
    a, b = outputs["ours"][:, prompt_len:], outputs["theirs"][:, prompt_len:]
    if a.shape[1] != new_tokens or b.shape[1] != new_tokens:
        raise RuntimeError(f"expected {new_tokens} new tokens, got ours {a.shape[1]}, transformers {b.shape[1]}")
    differ = (a != b).any(0).nonzero()  # the first new-token position where any row differs
    result["tokens_match"] = bool(len(differ) == 0)
    result["first_mismatch"] = int(differ[0]) if len(differ) else None
    return result


def matmul_peak(sizes=(1024, 2048, 3072), repeats: int = 5) -> float:
    """Best FLOP/s of square matmuls ``n x n @ n x n`` (2 n^3 FLOPs each) on this machine: fp32 on the CPU,
    bf16 on CUDA (what autocast trains in)."""
    best, dtype = 0.0, torch.bfloat16 if cuda() else torch.float32
    for n in sizes:
        a, b = (torch.randn(n, n, device=DEVICE, dtype=dtype) for _ in range(2))
        for _ in range(2):
            a @ b
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            a @ b
            sync()
            best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def training_flops_per_token(cfg: ModelConfig, seq: int) -> float:
    """6 x matmul parameters + causal attention 6 x layers x q_width x seq / 2 (see the module docstring)."""
    q_width, kv_width = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    per_layer = cfg.hidden_size * (2 * q_width + 2 * kv_width) + 3 * cfg.hidden_size * cfg.intermediate_size
    matmul_params = cfg.num_hidden_layers * per_layer + cfg.vocab_size * cfg.hidden_size  # + the head
    return 6 * matmul_params + 6 * cfg.num_hidden_layers * q_width * seq / 2


def bench_mfu(cfg: ModelConfig, batch: int, seq: int, repeats: int, warmup: int, seed: int, peak: float) -> dict:
    """Training tokens/s of both sides (and of ours compiled) on ``cfg``, and what fraction of the matmul peak it is."""
    ours, theirs = build_models(cfg, seed)
    ids = torch.randint(cfg.vocab_size, (batch, seq), device=DEVICE)
    fns = {
        "ours": train_step_fn(ours, ids, hf=False),
        "theirs": train_step_fn(theirs, ids, hf=True),
        "ours_compiled": train_step_fn(ours, ids, hf=False, compiled=True),
    }
    fns["ours_compiled"]()  # compilation happens here, outside the timed repeats
    times = interleaved(fns, repeats, warmup)
    r = per_token({k: times[k] for k in ("ours", "theirs")}, batch * seq)
    r["ours_compiled"] = batch * seq / statistics.median(times["ours_compiled"])
    r["seconds"]["ours_compiled"] = times["ours_compiled"]
    flops = training_flops_per_token(cfg, seq)
    return r | {
        "flops_per_token": flops,
        "peak_flops": peak,
        "mfu_ours": r["ours"] * flops / peak,
        "mfu_theirs": r["theirs"] * flops / peak,
        "mfu_ours_compiled": r["ours_compiled"] * flops / peak,
    }


def per_token(times: dict[str, list[float]], tokens: int) -> dict:
    """Median tokens/s per side and their ratio ours/theirs, plus the noise checks and the raw seconds."""
    ours, theirs = times["ours"], times["theirs"]
    median = {"ours": tokens / statistics.median(ours), "theirs": tokens / statistics.median(theirs)}
    return {
        **median,
        "ratio": median["ours"] / median["theirs"],
        "best_ratio": min(theirs) / min(ours),
        "paired_ratio": statistics.median(t / o for o, t in zip(ours, theirs, strict=True)),
        "seconds": times,
    }


def environment(cfg: ModelConfig, model: Ministral3, threads: int, args) -> dict:
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name(DEVICE) if cuda() else None,
        "threads": threads,
        "dtype": "float32 (training: bf16 autocast)" if cuda() else "float32",
        "device": str(DEVICE),
        "quick": args.quick,
        "seed": args.seed,
        "parameters": model.num_parameters(),
        "config": dataclasses.asdict(cfg),
    }


def verdict(r: dict, target: float | None) -> str:
    """PASS / BELOW TARGET when the median, paired and best ratios agree about the target, else BORDERLINE."""
    if target is None:
        return "-"
    above = [r[k] >= target for k in ("ratio", "paired_ratio", "best_ratio")]
    return "PASS" if all(above) else "BELOW TARGET" if not any(above) else "BORDERLINE"


def print_table(results: dict, labels: dict[str, str]) -> None:
    cols = f"{'minimistral':>12} {'transformers':>13} {'ratio':>7} {'target':>7} {'paired':>7} {'best':>7}"
    header = f"{'metric':<28} {cols}  verdict"
    print(header)
    print("-" * len(header))
    for metric, r in results.items():
        target = TARGETS[metric]
        target_s = "-" if target is None else f">={target:.1f}x"
        ratios = f"{r['ratio']:>6.3f}x {target_s:>7} {r['paired_ratio']:>6.3f}x {r['best_ratio']:>6.3f}x"
        name = f"{metric} {labels[metric]}"
        print(f"{name:<28} {r['ours']:>12,.0f} {r['theirs']:>13,.0f} {ratios}  {verdict(r, target)}")
    print("tokens/s, median of interleaved repeats; ratio = minimistral / transformers of those medians;")
    print("paired = median over rounds of the per-round ratio; best = ratio of the fastest repeats")


ROLLOUT_PROMPTS = 4  # prompts per rollout batch, of lengths from half to twice the decode prompt


def bench_rollouts(ours, theirs, cfg, prompt_len, new_tokens, group, repeats, warmup) -> dict:
    """``group`` sampled responses to each of 4 prompts of different lengths, one left-padded batch: our
    rollout sampler against ``hf.generate``."""
    from minimistral.arch.generate import pad_left
    from minimistral.posttrain.rollouts import sample

    lengths = torch.linspace(prompt_len // 2, 2 * prompt_len, ROLLOUT_PROMPTS).round().int().tolist()
    prompts = [torch.randint(3, cfg.vocab_size, (n,)).tolist() for n in lengths]
    ids, mask = pad_left([p for p in prompts for _ in range(group)], pad_id=0)
    ids, mask = ids.to(DEVICE), mask.to(DEVICE)

    def run_ours():
        sample(ours, prompts, group, new_tokens, temperature=1.0)

    def run_theirs():
        theirs.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                        do_sample=True, temperature=1.0, top_k=0, top_p=1.0)  # fmt: skip

    rows = ROLLOUT_PROMPTS * group
    return per_token(interleaved({"ours": run_ours, "theirs": run_theirs}, repeats, warmup), rows * new_tokens)


def main(argv=None) -> dict:
    global DEVICE
    args = parse_args(argv)
    DEVICE = torch.device(args.device)
    if cuda() and not torch.cuda.is_available():
        raise SystemExit("bench_speed.py: --device cuda: no CUDA device here")
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    sizes = shapes(args.quick)
    repeats = args.repeats or sizes["repeats"]
    cfg = bench_config()
    ours, theirs = build_models(cfg, args.seed)
    env = environment(cfg, ours, torch.get_num_threads(), args)
    where = f"{env['gpu']} (training under bf16 autocast)" if cuda() else "cpu"
    print(f"torch {env['torch']}, transformers {env['transformers']}, threads {env['threads']}, fp32 on {where}")
    print(f"transformers attention: {theirs.config._attn_implementation}")
    print(f"config: {cfg}")
    print(f"parameters: {env['parameters']:,}  repeats: {repeats} (+{args.warmup} warm-up)\n")

    load_before = os.getloadavg()[0]
    torch.manual_seed(args.seed + 1)  # inputs
    (tb, ts), (pb, ps) = sizes["train"], sizes["prefill"]
    results = {
        "training": bench_training(ours, theirs, cfg, tb, ts, repeats, args.warmup),
        "prefill": bench_prefill(ours, theirs, cfg, pb, ps, repeats, args.warmup),
        "decode": bench_decode(ours, theirs, cfg, sizes["prompt"], sizes["new_tokens"], repeats, args.warmup),
        "rollouts": bench_rollouts(
            ours, theirs, cfg, sizes["prompt"], sizes["new_tokens"], sizes["group"], repeats, args.warmup
        ),
    }
    labels = {
        "training": f"({tb}x{ts})",
        "prefill": f"({pb}x{ps})",
        "decode": f"(1x{sizes['new_tokens']} new)",
        "rollouts": f"({ROLLOUT_PROMPTS}x{sizes['group']}x{sizes['new_tokens']} sampled)",
    }
    env["load_average_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
    print_table(results, labels)
    print(f"1-min load average: {load_before:.2f} before, {env['load_average_1min']['after']:.2f} after")
    match = results["decode"]["tokens_match"]
    detail = "" if match else f" (first difference at new token {results['decode']['first_mismatch']})"
    print(f"decode outputs identical: {match}{detail}")

    results["across_shapes"] = shapes_section(sizes, repeats, args)
    results["mfu"] = mfu_section(cfg, sizes, repeats, args)
    report = {"environment": env, "shapes": {**sizes, "repeats": repeats}, "results": results}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)
        print(f"wrote {args.json}")
    return report


def shapes_section(sizes: dict, repeats: int, args) -> dict:
    """Training and greedy decoding at batch 1 and 8 on every shape of ``shape_configs``, each ratio printed."""
    (tb, ts), new = sizes["train"], sizes["new_tokens"]
    out = {}
    header = f"\n{'shape':<8} {'metric':<22} {'minimistral':>12} {'transformers':>13} {'ratio':>7} {'target':>7}"
    header += f" {'paired':>7} {'best':>7}  verdict       identical"
    print(header + "\n" + "-" * (len(header) - 1))
    for name, cfg in shape_configs(args.quick).items():
        ours, theirs = build_models(cfg, args.seed)
        torch.manual_seed(args.seed + 1)
        out[f"{name} training ({tb}x{ts})"] = bench_training(ours, theirs, cfg, tb, ts, repeats, args.warmup)
        for batch in (1, 8):
            r = bench_decode(ours, theirs, cfg, sizes["prompt"], new, repeats, args.warmup, batch=batch)
            out[f"{name} decode ({batch}x{new} new)"] = r
    for key, r in out.items():
        name, label = key.split(" ", 1)
        target = TARGETS[label.split()[0]]
        ratios = f"{r['ratio']:>6.3f}x {f'>={target:.1f}x':>7} {r['paired_ratio']:>6.3f}x {r['best_ratio']:>6.3f}x"
        same = str(r.get("tokens_match", ""))
        line = f"{name:<8} {label:<22} {r['ours']:>12,.0f} {r['theirs']:>13,.0f} {ratios}"
        print(f"{line}  {verdict(r, target):<12}  {same}")
    return out


def env_gpu() -> str:
    return torch.cuda.get_device_name(DEVICE) if cuda() else "cpu"


def mfu_section(cfg: ModelConfig, sizes: dict, repeats: int, args) -> dict:
    """MFU of the bench config and of the pretraining workload (tiny-24b, 16 x 256), printed as a table."""
    from minimistral.arch.config import TINY_CONFIGS

    sizes_n = (4096, 8192) if cuda() else (512, 1024) if args.quick else (1024, 2048, 3072)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else matmul_peak(sizes=sizes_n)
    (tb, ts) = sizes["train"]
    workloads = {f"bench config ({tb}x{ts})": (cfg, tb, ts)}
    if not args.quick:
        workloads["pretraining tiny-24b (16x256)"] = (TINY_CONFIGS["tiny-24b"].replace(eos_token_id=None), 16, 256)
    out = {}
    source = "given (--peak-tflops)" if args.peak_tflops else "measured"
    kind = f"bf16 on {env_gpu()}" if cuda() else f"fp32, {torch.get_num_threads()} threads"
    print(f"\nmatmul peak, {kind}, {source}: {peak / 1e9:,.0f} GFLOP/s")
    header = f"{'training workload':<32} {'GFLOP/token':>11} {'minimistral':>12} {'transformers':>13}"
    header += f" {'compiled':>9}  target  verdict"
    print(header + "\n" + "-" * len(header))
    for name, (c, b, s) in workloads.items():
        r = bench_mfu(c, b, s, max(3, repeats // 2), args.warmup, args.seed, peak)
        out[name] = r
        mfu = f"{r['mfu_ours']:>11.1%} {r['mfu_theirs']:>13.1%} {r['mfu_ours_compiled']:>9.1%}"
        best = max(r["mfu_ours"], r["mfu_ours_compiled"])
        print(f"{name:<32} {r['flops_per_token'] / 1e9:>11.3f} {mfu}  >={MFU_TARGET:.0%}  ", end="")
        print("PASS" if best >= MFU_TARGET else "BELOW TARGET")
    print("MFU = training tokens/s x FLOPs/token / matmul peak (same machine, same run);")
    print("compiled = minimistral under TrainConfig(compile=True): torch.compile + fused AdamW")
    return out


if __name__ == "__main__":
    sys.exit(guarded(main))  # a bad checkpoint or argument: one line, exit 2
