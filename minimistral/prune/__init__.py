"""Pruning (paper §3.1, Algorithm 2): the paper's three heuristics, their baselines, streaming, the study.

``minimistral.prune.prune(model, batches, num_layers=..., hidden_size=..., intermediate_size=...)``
runs Algorithm 2 in memory; ``prune.streaming.prune_checkpoint`` does the same one block at a time.
"""

from minimistral.prune.heuristics import prune, prune_ffn, prune_hidden, prune_layers

__all__ = ["prune", "prune_ffn", "prune_hidden", "prune_layers"]
