"""A model that answers from a script: for tests, benchmarks and examples that must not need a real model."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, Union

import anyio

from ..exceptions import ConfigError
from ..models import (
    Message,
    Model,
    ModelResponse,
    ModelSettings,
    TokenCallback,
    ToolCall,
    ToolDefinition,
    Usage,
)

__all__ = ["ScriptedModel", "call"]

_ids = itertools.count(1)

Reply = Union[str, ToolCall, Sequence[ToolCall], ModelResponse, BaseException]
ScriptFunction = Callable[[Sequence[Message], Sequence[ToolDefinition]], Reply]


def call(name: str, /, **arguments: Any) -> ToolCall:
    """A tool call for a script: `call("lookup_order", order_id="1042")`."""
    return ToolCall(call_id=f"call_{next(_ids)}", name=name, arguments=arguments)


class ScriptedModel(Model):
    """Answers each request with the next item of a script, or with what a function returns.

    Items may be: a `str` (a final answer), a `ToolCall` or a list of them (made with `call()`), a full
    `ModelResponse`, or an exception instance (raised, to script failures). A function receives the
    messages and tool definitions and returns any of these, which makes the model deterministic by
    conversation rather than by position: what a resumed run needs.

    Attributes:
        requests: the messages of each request received (a snapshot), for assertions.
        request_settings: the settings of each request (what the loop forced: `tool_choice`,
            `allowed_tools`, `sensitive`...).

    Args:
        script: the items, or a function.
        name: the model name recorded in journals.
        usage: the usage reported for each call.
        delay_s: sleep before answering (to exercise timeouts).
        tokens_per_s: with `on_token`, stream the answer's text at this rate.
        record: keep `requests` (turn off in benchmarks).
    """

    def __init__(
        self,
        script: Sequence[Reply] | ScriptFunction,
        *,
        name: str = "test:scripted",
        usage: Usage | None = None,
        delay_s: float = 0.0,
        record: bool = True,
    ):
        self._function = script if callable(script) else None
        self._items = None if callable(script) else list(script)
        self._name = name
        self._usage = usage if usage is not None else Usage(input_tokens=20, output_tokens=10)
        self._delay_s = delay_s
        self._record = record
        self._position = 0
        self.requests: list[tuple[Message, ...]] = []
        self.request_settings: list[ModelSettings] = []

    @property
    def name(self) -> str:
        return self._name

    @property
    def request_count(self) -> int:
        return self._position

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings = ModelSettings(),  # noqa: B008 - frozen dataclass, safe as a default
        on_token: TokenCallback | None = None,
    ) -> ModelResponse:
        if self._record:
            self.requests.append(tuple(messages))
            self.request_settings.append(settings)
        if self._delay_s:
            await anyio.sleep(self._delay_s)
        if self._function is not None:
            item = self._function(messages, tools)
        else:
            assert self._items is not None
            if self._position >= len(self._items):
                raise ConfigError(
                    f"ScriptedModel {self._name!r} ran out of replies after {len(self._items)}; add more to the script"
                )
            item = self._items[self._position]
        self._position += 1
        response = self._to_response(item)
        if on_token is not None and response.text:
            on_token(response.text)
        return response

    def _to_response(self, item: Reply) -> ModelResponse:
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, ModelResponse):
            return item if item.model else item.model_copy(update={"model": self._name})
        if isinstance(item, str):
            return ModelResponse(text=item, usage=self._usage, model=self._name)
        calls = (item,) if isinstance(item, ToolCall) else tuple(item)
        return ModelResponse(
            tool_calls=calls, usage=self._usage, model=self._name, finish_reason="tool_calls"
        )
