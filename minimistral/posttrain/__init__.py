"""Post-training (paper §4): the chat format, SFT (reasoning and Instruct), GRPO, the pairwise reward model, ODPO.

The modules, in the order the recipes use them: ``chat`` (the format), ``tasks`` and ``rubrics`` (the data and
their programmatic judges), ``sft``, ``grpo``, ``pwrm``, ``odpo``; ``pipeline`` (the driver's steps), ``study``
and ``odpo_study`` (what they are measured by).

Public names later stages and tests rely on: :func:`group_advantages`, :func:`grpo_loss`, :func:`odpo_loss`,
:func:`encode_chat`, :func:`encode_prompt`, :func:`split_response`, :func:`judged_answer`.
"""

from minimistral.posttrain.chat import encode_chat, encode_prompt, judged_answer, split_response, token_names
from minimistral.posttrain.grpo import group_advantages, grpo_loss
from minimistral.posttrain.odpo import odpo_loss

__all__ = [
    "encode_chat",
    "encode_prompt",
    "group_advantages",
    "grpo_loss",
    "judged_answer",
    "odpo_loss",
    "split_response",
    "token_names",
]
