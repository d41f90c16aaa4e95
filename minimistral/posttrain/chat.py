"""The chat format of the Instruct and Reasoning models, with Tekken's control tokens (paper §4).

One conversation is one token sequence; control tokens enter it by id only (text can never forge
them, see ``data.tokenizer``)::

    <s> [SYSTEM_PROMPT] system [/SYSTEM_PROMPT] [INST] user [/INST] assistant </s> [INST] user [/INST] ...

A Reasoning model writes its chain of thought between ``[THINK]`` and ``[/THINK]``, then the answer::

    ... [INST] user [/INST] [THINK] thinking [/THINK] answer </s>

Ids: ``<s>`` 1, ``</s>`` 2, ``[INST]`` 3, ``[/INST]`` 4, ``[SYSTEM_PROMPT]`` 17, ``[/SYSTEM_PROMPT]`` 18,
Tekken's own. Tekken has ``[THINK]``/``[/THINK]`` only in its later versions, past the 32 control
ids our tiny tokenizer reserves; we give them the first two unused control ids, 20 and 21
(``<SPECIAL_20>``, ``<SPECIAL_21>`` in ``tokenizer.json``), and render them by name.

Training on a conversation trains on the assistant's tokens only: :func:`encode_chat` returns the
ids and a mask that is true on every token an assistant turn writes (its thinking, answer and ``</s>``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from minimistral.data.tokenizer import BOS_ID, EOS_ID, SPECIAL_TOKENS, Tokenizer

INST, END_INST, SYSTEM, END_SYSTEM = 3, 4, 17, 18
THINK, END_THINK = 20, 21  # our additions: unused control ids of the tiny tokenizer
CONTROL_NAMES = {i: name for i, name in enumerate(SPECIAL_TOKENS)} | {THINK: "[THINK]", END_THINK: "[/THINK]"}
ROLES = ("system", "user", "assistant")


def encode_chat(tokenizer: Tokenizer, messages: Sequence[Mapping[str, str]]) -> tuple[list[int], list[bool]]:
    """Ids of a whole conversation and the mask of the tokens the assistant writes.

    ``messages``: ``{"role": "system" | "user" | "assistant", "content": ..., "thinking": ...}`` (``thinking``
    optional, assistant only); an optional system message first, then user and assistant alternating.
    """
    _check(messages)
    ids, mask = [BOS_ID], [False]
    for message in messages:
        role, content = message["role"], message["content"]
        if role == "system":
            part, written = [SYSTEM, *tokenizer.encode(content, bos=False), END_SYSTEM], False
        elif role == "user":
            part, written = [INST, *tokenizer.encode(content, bos=False), END_INST], False
        else:
            part, written = (
                [*_thinking(tokenizer, message.get("thinking")), *tokenizer.encode(content, bos=False)],
                True,
            )
            part.append(EOS_ID)
        ids += part
        mask += [written] * len(part)
    return ids, mask


def encode_prompt(tokenizer: Tokenizer, messages: Sequence[Mapping[str, str]], think: bool = False) -> list[int]:
    """The ids a model continues to answer the last user message (``think``: then opens with ``[THINK]``)."""
    if not messages or messages[-1]["role"] != "user":
        raise ValueError("messages: the prompt must end with a user message")
    ids, _ = encode_chat(tokenizer, messages)
    return ids + ([THINK] if think else [])


def split_response(tokenizer: Tokenizer, ids: Sequence[int], thinking: bool = False) -> dict:
    """A generated response (the ids after ``[/INST]``) as ``{"thinking", "answer", "ended"}``.

    ``thinking`` is the text between ``[THINK]`` and ``[/THINK]`` (``None`` if the response has no
    ``[THINK]``; unfinished thinking leaves ``answer`` empty); ``ended``: the response wrote ``</s>``.
    The argument ``thinking=True`` says the prompt already opened ``[THINK]`` (``encode_prompt(...,
    think=True)``), so ``ids`` start inside the thinking.
    """
    ids = [THINK, *ids] if thinking else list(ids)
    ended = EOS_ID in ids
    ids = ids[: ids.index(EOS_ID)] if ended else ids
    thinking = None
    if ids[:1] == [THINK]:
        closed = END_THINK in ids
        end = ids.index(END_THINK) if closed else len(ids)
        thinking, ids = tokenizer.decode(ids[1:end]), ids[end + 1 :] if closed else []
    return {"thinking": thinking, "answer": tokenizer.decode(ids), "ended": ended}


def judged_answer(tokenizer: Tokenizer, ids: Sequence[int], thinking: bool = False) -> str:
    """What a judge reads of a response: its answer, the thinking stripped (paper §4, ODPO on Reasoning models)."""
    return split_response(tokenizer, ids, thinking)["answer"].strip()


def token_names(tokenizer: Tokenizer, ids: Sequence[int]) -> list[str]:
    """Each token as the text it adds, control tokens by name (for showing a conversation token by token)."""
    return [CONTROL_NAMES[i] if i < len(SPECIAL_TOKENS) else tokenizer.decode([i]) for i in ids]


def _thinking(tokenizer: Tokenizer, thinking: str | None) -> list[int]:
    return [] if thinking is None else [THINK, *tokenizer.encode(thinking, bos=False), END_THINK]


def _check(messages: Sequence[Mapping[str, str]]) -> None:
    roles = [m.get("role") for m in messages]
    body = roles[1:] if roles[:1] == ["system"] else roles
    for i, role in enumerate(body):
        if role != ("user" if i % 2 == 0 else "assistant"):
            raise ValueError(
                f"messages: expected an optional system message, then user and assistant alternating; got roles {roles}"
            )
    for m in messages:
        if "content" not in m or not isinstance(m["content"], str):
            raise ValueError(f"messages: every message needs a string 'content', got {dict(m)}")
        if "thinking" in m and m["role"] != "assistant":
            raise ValueError(f"messages: only an assistant message can carry 'thinking', got role {m['role']!r}")
