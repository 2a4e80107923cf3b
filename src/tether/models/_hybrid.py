"""Hybrid inference: which requests must stay on this host, and whether an answer is good enough.

A request is sensitive when the caller says so (`ModelSettings.sensitive`) or when tether.guardrails'
PII recognisers find personal data in what the user wrote or a tool returned. Sensitive requests go only
to private models (`Router`) and never through a cache (`CachedModel`).

The system prompt is not scanned: it is the developer's text, and an agent whose instructions mention
a support address would otherwise never reach a remote model. Assistant turns are not scanned either:
whatever personal data they repeat came from a user or tool message, which is.

`answer_problem` is the quality check that decides when a local-first answer is escalated to the next
tier: an empty answer, a refusal, an answer cut off at the token limit, or a tool call that does not
parse or does not match its tool's schema.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence

from ..guardrails import PII_ENTITIES, PIIEntity, SchemaGuard, find_pii
from ._base import ModelSettings
from ._messages import Message, ModelResponse, ToolDefinition, ToolResultMessage, UserMessage

__all__ = ["answer_problem", "is_private_name", "sensitive_reason"]

# Refusals as small and large models phrase them, anchored at the start of the answer: a sentence that
# merely mentions "I cannot" further down is an answer, not a refusal.
_REFUSAL = re.compile(
    r"^\W*(?:i'?m sorry,? but |i am sorry,? but |sorry,? (?:but )?|unfortunately,? )?"
    r"(?:i (?:can(?:not|'t)|am (?:not able|unable)|'m (?:not able|unable)|won'?t|will not"
    r"|do not have the ability)"
    # "I can't help but notice..." is an answer
    r"(?: to)? (?:help(?! but)|assist|answer|provide|comply|do that|fulfil|fulfill|complete|support)"
    r"|as an ai(?: language model)?,? i (?:can(?:not|'t)|am unable|don'?t))",
    re.IGNORECASE,
)


def sensitive_reason(
    messages: Sequence[Message], settings: ModelSettings, entities: Iterable[PIIEntity] = PII_ENTITIES
) -> str | None:
    """Why a request must stay on this host, or None when it may leave.

    Args:
        messages: the conversation.
        settings: the call's settings (`sensitive` marks a request explicitly).
        entities: the kinds of personal data that make a request sensitive.

    Returns:
        `marked sensitive`, or the personal data found (`email in message 2`), or None.
    """
    if settings.sensitive:
        return "marked sensitive"
    kinds = tuple(entities)
    for index, message in enumerate(messages):
        if isinstance(message, UserMessage | ToolResultMessage):
            found = _pii_kinds(message.content, kinds)
            if found:
                return f"{', '.join(found)} in message {index + 1} ({message.role})"
    return None


# An agent's conversation grows by a message or two per step and every step scans it again; the
# messages already seen hit this cache (a str caches its own hash, so a hit costs one dict lookup).
@functools.lru_cache(maxsize=4096)
def _pii_kinds(text: str, entities: tuple[PIIEntity, ...]) -> tuple[str, ...]:
    return tuple(sorted({entity for _, _, entity, _ in find_pii(text, entities)}))


def is_private_name(name: str) -> bool:
    """Whether a model is private by default: the embedded `local:` models run on this host."""
    return name.startswith("local:")


def answer_problem(
    response: ModelResponse, tools: Sequence[ToolDefinition], settings: ModelSettings
) -> str | None:
    """What makes an answer not good enough to keep, or None when it is fine.

    Args:
        response: the answer.
        tools: the tools the model was offered (calls are checked against their schemas).
        settings: the call's settings.

    Returns:
        `empty answer`, `refusal`, `cut off at max_tokens=N`, or what is wrong with a tool call.
    """
    if response.tool_calls:
        by_name = {t.name: t for t in tools}
        for call in response.tool_calls:
            tool = by_name.get(call.name)
            if tool is None:
                return f"called unknown tool {call.name!r}"
            if isinstance(call.arguments, str):
                return f"arguments of {call.name} are not JSON"
            errors = _schema_guard(json.dumps(tool.parameters, sort_keys=True)).errors(
                json.dumps(call.arguments)
            )
            if errors:
                return f"arguments of {call.name} do not match its schema: {errors[0]}"
        return None
    text = response.text.strip()
    if not text:
        return "empty answer"
    if response.finish_reason == "length":
        return f"cut off at max_tokens={settings.max_tokens}"
    if _REFUSAL.match(text.replace("\u2019", "'")):  # a typographic apostrophe, as in "I can\u2019t"
        return "refusal"
    return None


@functools.lru_cache(maxsize=256)
def _schema_guard(schema_json: str) -> SchemaGuard:
    return SchemaGuard(json.loads(schema_json))
