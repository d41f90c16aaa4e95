"""minimistral: a readable reproduction of Ministral 3 (Mistral AI, arXiv:2601.08584)."""

from minimistral.config import CONFIGS, ModelConfig, get_config
from minimistral.errors import CheckpointError
from minimistral.generate import generate
from minimistral.hub import from_pretrained, save_pretrained
from minimistral.model import KVCache, Ministral3, default_device

__all__ = [
    "CONFIGS",
    "CheckpointError",
    "KVCache",
    "Ministral3",
    "ModelConfig",
    "default_device",
    "from_pretrained",
    "generate",
    "get_config",
    "save_pretrained",
]
__version__ = "0.1.0"
