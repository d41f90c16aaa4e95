"""minimistral: a readable reproduction of Ministral 3 (Mistral AI, arXiv:2601.08584).

Where each section of the paper lives (``docs/paper.md`` summarises the paper):

- ``arch/``      §2  the decoder (config, RoPE/YaRN, model), HF-format I/O, generation, parameter counts
- ``data/``      §3  real data from registry packages, the tokenizer, the pretraining corpus
- ``train.py``       the one training engine every stage runs on
- ``pretrain.py`` §3 the tiny parent (our Mistral Small 3.1)
- ``prune/``     §3.1, Algorithm 2: the three heuristics; baselines; streaming; the study
- ``distill.py`` §3.1 logit distillation
- ``longctx/``   §2, §3.1 the long-context stage: YaRN, temperature, passkey
- ``cascade/``   §3.1, Algorithm 1: the cascade's steps, the claims, the report
- ``evaluate/``  §4  held-out loss and bits per byte, n-gram baselines, task metrics
- ``reproduce.py``   the whole pipeline, top to bottom, as named steps
- ``show/``          what only the notebooks draw
"""

from minimistral.arch.config import CONFIGS, ModelConfig, get_config
from minimistral.arch.generate import generate
from minimistral.arch.hub import from_pretrained, save_pretrained
from minimistral.arch.model import KVCache, Ministral3, default_device
from minimistral.errors import CheckpointError

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
