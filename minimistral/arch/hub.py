"""Hugging Face-format checkpoints: ``from_pretrained`` and ``save_pretrained``, safetensors only.

A directory holds ``config.json`` and either ``model.safetensors`` or shards listed in
``model.safetensors.index.json``. Tensors are read one at a time from memory-mapped
files into a model built on the meta device, so peak memory stays near one copy of
the weights. Pickle files (``pytorch_model.bin``) are never opened.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from minimistral.arch.config import ModelConfig
from minimistral.arch.model import Ministral3, skeleton
from minimistral.errors import CheckpointError, run_dir_hint
from minimistral.files import atomic_write
from minimistral.vision.config import VisionConfig

log = logging.getLogger("minimistral")

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "consolidated.00.pth")
# mistral3 (multimodal) layouts, old (transformers 4) and new (5) -> our names
TEXT_PREFIXES = {
    "model.language_model.": "model.",
    "language_model.model.": "model.",
    "language_model.lm_head.": "lm_head.",
}
VISION_MODULES = ("vision_tower.", "multi_modal_projector.")  # our names: vision.model.VisionLanguageModel
VISION_PREFIXES = {prefix + m: m for m in VISION_MODULES for prefix in ("model.", "")}


def load_config(path: str | os.PathLike) -> ModelConfig:
    """Parse ``DIR/config.json`` into a :class:`ModelConfig` (clear error on any problem)."""
    file = Path(path) / "config.json"
    if not Path(path).is_dir():
        raise CheckpointError(f"{path}: not a checkpoint directory")
    if not file.is_file():
        raise CheckpointError(f"{file}: missing (a checkpoint directory needs config.json){run_dir_hint(path)}")
    try:
        raw = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{file}: expected a JSON object")
    return ModelConfig.from_hf_dict(raw, source=str(file))


def weight_files(path: str | os.PathLike) -> dict[str, Path]:
    """Map each stored tensor name to its file, from the index or the single file."""
    d = Path(path)
    if (d / INDEX).is_file():
        try:
            weight_map = json.loads((d / INDEX).read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{d / INDEX}: unreadable index ({exc!r})") from None
        files = {name: d / f for name, f in weight_map.items()}
        for f in sorted(set(files.values())):
            if not f.is_file():
                raise CheckpointError(f"{f}: shard named in {INDEX} is missing")
        return files
    if (d / SINGLE).is_file():
        with _open(d / SINGLE) as f:
            return {name: d / SINGLE for name in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    pickles = [p for p in PICKLES if (d / p).exists()]
    if pickles:
        raise CheckpointError(
            f"{d / pickles[0]}: only safetensors is read (pickle files are never loaded); "
            "convert it with transformers' save_pretrained(safe_serialization=True)"
        )
    if (d / "consolidated.safetensors").is_file():
        raise CheckpointError(f"{d}: Mistral-native consolidated.safetensors; use the HF-format files")
    raise CheckpointError(f"{d}: no {SINGLE} or {INDEX}")


def _open(file: Path):
    try:
        return safe_open(str(file), framework="pt", device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{file}: unreadable safetensors file ({exc}); is it truncated?") from None


def our_name(name: str) -> str:
    """Stored name (any layout) -> our parameter name, vision tower and projector included."""
    for old, new in (VISION_PREFIXES | TEXT_PREFIXES).items():
        if name.startswith(old):
            return new + name[len(old) :]
    return name


def text_name(name: str) -> str | None:
    """Stored name -> our parameter name; None for the vision tower and projector."""
    ours = our_name(name)
    return None if ours.startswith(VISION_MODULES) else ours


def hf_name(name: str, vision: bool) -> str:
    """Our parameter name -> the name transformers stores (``mistral3``'s layout when ``vision``)."""
    if vision and name.startswith(("model.", *VISION_MODULES)):
        return "model." + ("language_model." + name[len("model.") :] if name.startswith("model.") else name)
    return name


def load_vision_config(path: str | os.PathLike) -> VisionConfig | None:
    """The vision side of a ``mistral3`` ``config.json``; None for a text-only checkpoint."""
    file = Path(path) / "config.json"
    load_config(path)  # the same clear errors for a missing or malformed file
    raw = json.loads(file.read_text())
    return VisionConfig.from_hf_dict(raw, str(file)) if raw.get("model_type") == "mistral3" else None


def read_tensors(path: str | os.PathLike, vision: bool = False) -> Iterator[tuple[str, str, Path, torch.Tensor]]:
    """Yield (our name, stored name, file, tensor) lazily, one file open at a time.

    Without ``vision`` the vision tower and projector are skipped (with a notice).
    """
    by_file: dict[Path, list[str]] = {}
    for name, file in weight_files(path).items():
        by_file.setdefault(file, []).append(name)
    skipped = 0
    for file, names in by_file.items():
        with _open(file) as f:
            stored = set(f.keys())
            for name in names:
                ours = our_name(name) if vision else text_name(name)
                if ours is None:
                    skipped += 1
                    continue
                if name not in stored:
                    raise CheckpointError(f"{file}: tensor {name!r} listed in the index is not in the file")
                try:
                    tensor = f.get_tensor(name)
                except (SafetensorError, OSError) as exc:
                    raise CheckpointError(f"{file}: cannot read tensor {name!r} ({exc})") from None
                yield ours, name, file, tensor
    if skipped:
        log.warning("minimistral: skipped %d vision-tower/projector tensors (text model only)", skipped)


def from_pretrained(
    path: str | os.PathLike, dtype: torch.dtype | None = None, device=None, text_only: bool = False
) -> Ministral3:
    """Load a Hugging Face-format directory: ``ministral3`` or ``mistral`` (text), or ``mistral3``.

    A ``mistral3`` directory with its vision tensors gives the whole
    :class:`~minimistral.vision.model.VisionLanguageModel` (a :class:`Ministral3` that also reads
    images); with ``text_only``, or when it holds no vision tensors, its language model alone.
    ``dtype`` defaults to the stored dtype (bf16 stays bf16); a model has one dtype, so a
    checkpoint that mixes dtypes is cast to that of its first tensor. ``device`` defaults to cpu.
    Errors (:class:`CheckpointError`) name the file and the tensor or key at fault.
    """
    model = skeleton(load_config(path), _vision(path, text_only))
    device = torch.device(device or "cpu")
    for name, tensor in checked_tensors(path, model):
        dtype = dtype or tensor.dtype  # fixed by the first tensor when not given
        _set_parameter(model, name, tensor.to(device=device, dtype=dtype))
    model.tie_weights()
    return model.eval()


# the config fields that fix the tensors' shapes
SHAPE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "tie_word_embeddings")  # fmt: skip


def load_weights(model: Ministral3, path: str | os.PathLike) -> Ministral3:
    """Copy the weights of checkpoint ``path`` into ``model`` in place (a curriculum's later phase starts
    from an earlier one's weights), one tensor at a time; a checkpoint of another shape is a one-line
    ``CheckpointError`` naming it and the first shape field that differs. Only weights are taken: the
    model keeps its own positions, RoPE and token ids."""
    config = load_config(path)
    if f := next((f for f in SHAPE_FIELDS if getattr(config, f) != getattr(model.config, f)), None):
        theirs, ours = getattr(config, f), getattr(model.config, f)
        raise CheckpointError(f"{path}: not the weights of this model ({f} {theirs!r}, this model {ours!r})")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in checked_tensors(path, model):
            params[name].copy_(tensor)
    return model


def load_sharded(path: str | os.PathLike, dtype: torch.dtype, device, bf16: bool = False, text_only: bool = False):
    """``from_pretrained`` under torchrun with FSDP2 (``distributed.shard``): the model is built on the meta
    device and sharded before it holds any weight; each tensor is then read alone (memory-mapped) and every
    rank copies in its own shard. No rank ever holds the whole model, on the CPU or on its device: a real
    8B student in fp32 costs each of 8 ranks an eighth of its 34 GB, not all of it. Every rank must call this."""
    from minimistral.distributed import like, shard

    model = skeleton(load_config(path), _vision(path, text_only)).to(dtype)
    shard(model, bf16, device=torch.device(device))
    model.to_empty(device=device)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in checked_tensors(path, model):
            params[name].copy_(like(tensor.to(dtype), params[name]))  # this rank's rows of it
    return model.eval()


def _vision(path: str | os.PathLike, text_only: bool) -> VisionConfig | None:
    """The vision config to build: None for a text checkpoint, with ``text_only``, or without vision tensors."""
    vision = None if text_only else load_vision_config(path)
    if vision is not None and not any(our_name(n).startswith(VISION_MODULES) for n in weight_files(path)):
        log.warning("minimistral: %s has no vision tensors; loading its language model only", path)
        return None
    return vision


def checked_tensors(path: str | os.PathLike, model: Ministral3) -> Iterator[tuple[str, torch.Tensor]]:
    """(our name, tensor) for every parameter of ``model`` (built from ``path``'s config), read one at a time;
    a stored tensor the model lacks, a wrong shape, or a parameter with no tensor is a ``CheckpointError``."""
    expected = dict(model.named_parameters())  # tied head appears once
    tied_head = "lm_head.weight" if model.config.tie_word_embeddings else None
    loaded: set[str] = set()
    for name, stored_name, file, tensor in read_tensors(path, vision=hasattr(model, "vision_config")):
        if name == tied_head:
            continue  # tied: the head is the embedding matrix
        if name not in expected:
            raise CheckpointError(f"{file}: unexpected tensor {stored_name!r} for this config.json")
        want = tuple(expected[name].shape)
        if tuple(tensor.shape) != want:
            raise CheckpointError(
                f"{file}: tensor {stored_name!r} has shape {tuple(tensor.shape)}, config.json implies {want}"
            )
        yield name, tensor
        loaded.add(name)
    missing = sorted(set(expected) - loaded)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{path}: missing tensor {missing[0]!r}{more}")


def _set_parameter(model: torch.nn.Module, name: str, value: torch.Tensor) -> None:
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name)
    setattr(module, attr, torch.nn.Parameter(value, requires_grad=True))


def save_pretrained(
    model: Ministral3, path: str | os.PathLike, max_shard_size: int | None = None, state: dict | None = None
) -> Path:
    """Write ``config.json`` and safetensors weights that transformers loads into the same model.

    A text model is a ``ministral3`` / ``mistral`` directory (``AutoModelForCausalLM``); a
    vision-language model a ``mistral3`` one (``Mistral3ForConditionalGeneration``).

    With ``max_shard_size`` (bytes) the weights are split into shards plus an index.
    Every file is written to a temporary name and renamed into place, so an
    interrupted save never leaves a half-written file under a real name. ``state``: the weights to
    write, by ``model.state_dict()`` name (default: the model's own; the engine passes the whole
    tensors it gathered from FSDP2 shards).
    """
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    vision = getattr(model, "vision_config", None)
    state = {k: v.detach().to("cpu").contiguous() for k, v in (model.state_dict() if state is None else state).items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    state = {hf_name(k, vision is not None): v for k, v in state.items()}
    shards = _shard(state, max_shard_size)
    files: dict[str, bytes | dict] = {}
    if len(shards) == 1:
        files[SINGLE] = shards[0]
    else:
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
        files.update(zip(names, shards, strict=True))
        index = {
            "metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
            "weight_map": {k: n for n, shard in zip(names, shards, strict=True) for k in shard},
        }
        files[INDEX] = json.dumps(index, indent=2).encode()
    config = hf_config(model.config, vision) | {"dtype": str(next(iter(state.values())).dtype).removeprefix("torch.")}
    files["config.json"] = json.dumps(config, indent=2).encode()
    for name, content in files.items():
        atomic_write(d / name, content)
    for stale in list(d.glob("model*.safetensors")) + list(d.glob(INDEX)):
        if stale.name not in files:
            stale.unlink()
    return d


def hf_config(cfg: ModelConfig, vision: VisionConfig | None) -> dict:
    """``config.json`` of a text model, or of a ``mistral3`` model with ``vision``."""
    if vision is None:
        return cfg.to_hf_dict()
    text = {k: v for k, v in cfg.to_hf_dict().items() if k != "architectures"}
    return {
        "architectures": ["Mistral3ForConditionalGeneration"],
        "model_type": "mistral3",
        "text_config": text,
        "vision_config": vision.to_hf_dict(),
        **vision.wrapper_hf_dict(),
        "tie_word_embeddings": cfg.tie_word_embeddings,  # transformers 5 ties mistral3's head by this flag
    }


def _shard(state: dict[str, torch.Tensor], max_bytes: int | None) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, t in state.items():
        nbytes = t.numel() * t.element_size()
        if max_bytes and shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = t
        size += nbytes
    return shards
