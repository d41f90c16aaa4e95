"""More than one process: what ``torchrun`` needs from the engine, written out (engineering, not the paper).

Under ``torchrun --nproc_per_node N -m minimistral ...`` every process runs the same command. The
engine then trains one model data-parallel, the same run as one process would do:

* the global micro-batch (``TrainConfig.batch_size`` examples) is split into N equal slices, one per
  rank (:class:`minimistral.train.Sampler`), so the examples seen at each step do not depend on N;
* each rank's loss is a mean over its own tokens; weighting it by ``tokens_rank / tokens_all`` before
  backward and summing the gradients over ranks (one all-reduce after the micro-batches) gives the
  gradient of the mean over every token of the global micro-batch: what one process computes.
  ``DistributedDataParallel`` does the same sum, overlapped with backward; we write it out because a
  loss function may call any part of the model (the vision stage reads ``model.image_features``), which
  DDP's wrapper does not allow, and because a learner can read it in ten lines;
* rank 0 alone logs and writes checkpoints (atomically); every rank reads them to resume, with any N.

FSDP2 (``TrainConfig.fsdp``, ``--fsdp``) for a model that does not fit one device: :func:`shard` cuts the
model into units (each decoder or vision block, then the rest: embeddings, final norm, head, projector)
whose parameters are split over the ranks and gathered just before each unit's forward and backward.
The gradients are reduce-scattered *summed* (divide factor 1), so the token weighting above carries
over unchanged; checkpoints gather every tensor (:func:`full`) to rank 0, which writes the same HF
directory and optimizer file as without FSDP: any run resumes with or without it, with any N. A real
checkpoint is loaded straight into shards (``hub.load_sharded``); RL samples on the whole weights,
gathered once per iteration (:func:`gathered`), since each rank's rollouts take their own number of steps.

Single process (no ``torchrun``): every function here is a no-op or the identity, so the code paths
are the same and one process gives bitwise the results it gave before.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor, distribute_tensor


def init_from_env() -> None:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1); otherwise nothing.

    Backend: NCCL for CUDA tensors (each rank makes ``cuda:LOCAL_RANK`` its current device, so ``"cuda"``
    and :func:`minimistral.arch.model.default_device` mean its own GPU) and gloo for CPU tensors (the
    engine's token counts and logged scalars are summed on the CPU: NCCL alone refuses them); gloo only
    without CUDA.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("cpu:gloo,cuda:nccl")
    else:
        dist.init_process_group("gloo")


def rank_world() -> tuple[int, int]:
    """(rank, world size): (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over every rank (a new tensor; the identity with one process)."""
    out = values.clone()
    if rank_world()[1] > 1:
        dist.all_reduce(out)
    return out


def sum_gradients(params) -> None:
    r"""$g \leftarrow \sum_r g_r$ for every parameter with a gradient, in one flat all-reduce."""
    if rank_world()[1] == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])  # [sum of sizes]
    dist.all_reduce(flat)
    for g, chunk in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        g.copy_(chunk.view_as(g))


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Every rank starts from rank 0's weights (what DDP does when it wraps a model)."""
    if rank_world()[1] == 1:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor, src=0)


def finish() -> None:
    """Leave the process group (at the end of a command run under torchrun)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0 has written a checkpoint the others will read)."""
    if rank_world()[1] > 1:
        dist.barrier()


# ----------------------------------------------------------------------------- FSDP2
def shard(module: torch.nn.Module, bf16: bool = False, device: torch.device | None = None) -> torch.nn.Module:
    """FSDP2 in place: every decoder and vision block is one unit, the root holds what is left.

    Each unit's parameters become ``DTensor`` shards (dim 0 split over the ranks); the unit gathers
    them before its forward (and again in backward) and frees the gathered copy after. ``bf16``: gather
    and compute in bf16 (the parameters stay fp32 shards), gradients reduced in fp32. ``device``: where
    the shards will live (default: where the parameters are; needed for a model on the meta device,
    ``hub.load_sharded``). Returns ``module``.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from minimistral.arch.model import Block
    from minimistral.vision.encoder import VisionBlock

    device = (device or next(module.parameters()).device).type
    mesh = init_device_mesh(device, (rank_world()[1],))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
    options = {"mesh": mesh} | ({"mp_policy": policy} if policy else {})
    units = [m for m in module.modules() if isinstance(m, Block | VisionBlock)]
    for unit in [*units, module]:
        fully_shard(unit, **options)
        unit.set_gradient_divide_factor(1.0)  # sum over ranks: the losses are already token-weighted
        unit.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no pre-multiplied sum)
    return module


@contextlib.contextmanager
def gathered(module: torch.nn.Module):
    """Within the block, every FSDP2 unit of ``module`` holds its whole parameters, gathered once (a collective:
    every rank enters together) and kept between forwards, so that work whose number of forwards differs
    by rank (sampling: each rank's rollouts end at their own step) runs without collectives; resharded
    after. Costs one whole copy of the model per rank meanwhile. A module that is not sharded: nothing."""
    units = [m for m in module.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield module
    finally:
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(True, recurse=False)


def is_sharded(module: torch.nn.Module) -> bool:
    """Whether ``module``'s parameters are FSDP2 shards."""
    return any(isinstance(p, DTensor) for p in module.parameters())


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor on the CPU: a shard is gathered from every rank (each rank must call this, in the
    same order), an ordinary tensor is returned as it is, on the CPU."""
    if isinstance(tensor, DTensor):
        tensor = tensor.full_tensor()
    return tensor.detach().to("cpu")


def like(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``value`` (a whole tensor read from a checkpoint) laid out as ``param``: this rank's shard if
    ``param`` is a shard, else ``value`` on ``param``'s device."""
    if isinstance(param, DTensor):
        return distribute_tensor(value.to(param.device), param.device_mesh, param.placements)
    return value.to(param.device)
