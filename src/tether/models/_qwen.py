"""The Qwen2.5 chat prompt (ChatML with Qwen's tool-calling conventions), rendered in Python.

This reproduces the `tokenizer.chat_template` shipped in the Qwen2.5(-Coder)-Instruct GGUF files
character for character (a test renders both and compares tokens), without a Jinja engine at run time.
Rendering is prefix-stable: the prompt for a conversation extended by an assistant turn and tool results
begins with exactly the prompt and answer of the previous step, which is what lets llama.cpp reuse its
KV cache instead of evaluating the whole conversation again at each step of a run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Final

from ._messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolResultMessage,
    UserMessage,
)

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "IM_END",
    "IM_START",
    "TOOL_CALL_CLOSE",
    "TOOL_CALL_OPEN",
    "TOOL_RESPONSE_OPEN",
    "inert",
    "render_call",
    "render_prompt",
    "tojson",
    "tool_json",
]

IM_START: Final = "<|im_start|>"
IM_END: Final = "<|im_end|>"
TOOL_CALL_OPEN: Final = "<tool_call>"
TOOL_CALL_CLOSE: Final = "</tool_call>"
TOOL_RESPONSE_OPEN: Final = "<tool_response>"
DEFAULT_SYSTEM_PROMPT: Final = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

_TOOLS_INTRO: Final = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_OUTRO: Final = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
    "<args-json-object>}\n</tool_call>"
)


# The markup a message's text could use to pose as the template's own: ChatML special tokens
# (`<|im_start|>`, `<|im_end|>`, `<|endoftext|>`...) and the tool-call and tool-response tags.
_MARKUP: Final = re.compile(r"<(?=\|[^\s<>|]{1,40}\|>|/?tool_call>|/?tool_response>)")
_BREAK: Final = "\u200b"


def inert(text: str) -> str:
    """`text` with anything that reads as chat-template markup broken by a zero-width space.

    The prompt is tokenized with special tokens enabled (the template's own markup must become them),
    so a tool result or user message that contains `<|im_end|>` or `</tool_response>` could otherwise
    close its turn and open a fake one: a tool result posing as the user or the assistant. With a
    zero-width space after the `<` the text reads the same to the model but matches no special token and
    no tag. Text without such markup is returned unchanged (so prompts stay prefix-stable).
    """
    return _MARKUP.sub("<" + _BREAK, text) if "<" in text else text


def tojson(value: Any) -> str:
    """JSON as the chat template's `tojson` filter writes it (`", "` and `": "`, non-ASCII kept)."""
    return json.dumps(value, ensure_ascii=False)


def tool_json(tool: ToolDefinition) -> dict[str, Any]:
    """A tool as the template expects it: the OpenAI `{"type": "function", "function": {...}}` shape."""
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = tool.parameters
    return {"type": "function", "function": function}


def render_call(call: ToolCall) -> str:
    """One call as the model writes it between `<tool_call>` tags (the JSON object only)."""
    return '{"name": "' + call.name + '", "arguments": ' + tojson(call.arguments) + "}"


def render_prompt(
    messages: Sequence[Message],
    tools: Sequence[ToolDefinition] = (),
    *,
    add_generation_prompt: bool = True,
) -> str:
    """The prompt text for a conversation, as Qwen2.5's own chat template renders it.

    Args:
        messages: the conversation; a leading `SystemMessage` becomes the system block, later ones
            are system turns where they stand.
        tools: the tools the model may call, described in the system block.
        add_generation_prompt: end with the opening of the assistant's turn, for generation.

    Returns:
        The prompt, with ChatML special tokens as text (tokenize it with special tokens enabled).
    """
    out: list[str] = []
    first_is_system = bool(messages) and isinstance(messages[0], SystemMessage)
    system = inert(messages[0].content) if first_is_system else DEFAULT_SYSTEM_PROMPT
    if tools:
        out.append(f"{IM_START}system\n{system}{_TOOLS_INTRO}")
        out.extend("\n" + tojson(tool_json(tool)) for tool in tools)
        out.append(f"{_TOOLS_OUTRO}{IM_END}\n")
    else:
        out.append(f"{IM_START}system\n{system}{IM_END}\n")

    for index, message in enumerate(messages):
        if isinstance(message, SystemMessage):
            if index > 0:
                out.append(f"{IM_START}system\n{inert(message.content)}{IM_END}\n")
        elif isinstance(message, UserMessage):
            out.append(f"{IM_START}user\n{inert(message.content)}{IM_END}\n")
        elif isinstance(message, AssistantMessage):
            if not message.tool_calls:
                out.append(f"{IM_START}assistant\n{inert(message.content)}{IM_END}\n")
                continue
            out.append(f"{IM_START}assistant")
            if message.content:
                out.append("\n" + inert(message.content))
            out.extend(
                f"\n{TOOL_CALL_OPEN}\n{render_call(call)}\n{TOOL_CALL_CLOSE}" for call in message.tool_calls
            )
            out.append(f"{IM_END}\n")
        elif isinstance(message, ToolResultMessage):
            # consecutive tool results share one user turn, as in the template
            if index == 0 or not isinstance(messages[index - 1], ToolResultMessage):
                out.append(f"{IM_START}user")
            out.append(f"\n{TOOL_RESPONSE_OPEN}\n{inert(message.content)}\n</tool_response>")
            if index == len(messages) - 1 or not isinstance(messages[index + 1], ToolResultMessage):
                out.append(f"{IM_END}\n")
    if add_generation_prompt:
        out.append(f"{IM_START}assistant\n")
    return "".join(out)
