"""The contract every model backend implements."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from ._messages import Message, ModelResponse, ToolDefinition

__all__ = ["Model", "ModelSettings", "TokenCallback"]

TokenCallback = Callable[[str], None]
"""Called with each piece of text as the model generates it (for live display; may be called from a
worker thread by backends that generate in one)."""


@dataclass(frozen=True, kw_only=True)
class ModelSettings:
    """Per-call settings.

    Attributes:
        max_tokens: the most tokens the model may generate in this call.
        temperature: sampling temperature; 0 is greedy and repeatable.
        timeout_s: how long the call may take before `ModelTimeout`.
        tool_choice: `auto` (text or calls), `required` (must call a tool) or `none` (text only).
        seed: sampling seed, where the backend supports one.
        allowed_tools: with `tool_choice="required"`, the call must be to one of these (all tools stay
            in the prompt, so a local model's KV cache still matches). None: any tool.
        sensitive: the request holds data that must not leave this host: a `Router` sends it only to
            private models and a `CachedModel` neither stores nor serves it.
        hints: routing hints from the caller: `reasoning` (needs the reasoning tier), `latency_critical`
            (the fast tier), `tier:<name>` (exactly that tier).
        budget_usd: the most this one call should cost; a `Router` moves down a tier while the
            estimated cost is over it. None: no per-call budget.
        cache_scope: who may share cached answers (agent and tenant, e.g. `support/acme`); answers are
            never served across scopes.
        route_key: what A/B splits hash to pick an arm (a run id: every call of a run lands in the same
            arm); "" hashes the request's first user message.
    """

    max_tokens: int = 512
    temperature: float = 0.0
    timeout_s: float = 120.0
    tool_choice: Literal["auto", "required", "none"] = "auto"
    seed: int | None = 0
    allowed_tools: tuple[str, ...] | None = None
    sensitive: bool = False
    hints: tuple[str, ...] = ()
    budget_usd: float | None = None
    cache_scope: str = ""
    route_key: str = ""


class Model(abc.ABC):
    """A model that answers a conversation, possibly with tool calls.

    Backends live one per module (`tether.models.openai_compat`, `tether.models.llamacpp`,
    `tether.testing.ScriptedModel`); wrappers (fallback, retry, cache) take a `Model` and are one.
    """

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """A stable name for this model, recorded in the journal (e.g. `local:qwen2.5-coder-0.5b`)."""

    @abc.abstractmethod
    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings = ModelSettings(),  # noqa: B008 - frozen dataclass, safe as a default
        on_token: TokenCallback | None = None,
    ) -> ModelResponse:
        """Answer the conversation.

        Raises:
            ModelError: (a subclass saying why) when no answer could be had.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most models hold nothing
        """Release what the model holds (connections, loaded weights)."""
