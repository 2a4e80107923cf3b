"""The Qwen2.5 prompt: what the model reads, and that each step's prompt extends the previous one."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from tether.models import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolResultMessage,
    UserMessage,
)
from tether.models._qwen import DEFAULT_SYSTEM_PROMPT, render_call, render_prompt, tool_json

CALC = ToolDefinition(
    name="calculator",
    description="Evaluate an arithmetic expression.",
    parameters={
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
    },
)
WEATHER = ToolDefinition(
    name="get_weather",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string", "description": "a city, e.g. Zürich"}},
    },
)


def _call(call_id: str, expression: str) -> ToolCall:
    return ToolCall(call_id=call_id, name="calculator", arguments={"expression": expression})


def test_default_system_prompt_without_tools() -> None:
    assert render_prompt([UserMessage(content="hi")]) == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_tools_are_listed_in_the_system_block() -> None:
    prompt = render_prompt([SystemMessage(content="Be brief."), UserMessage(content="hi")], [CALC])
    assert prompt.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n\n")
    tools_block = prompt.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]
    assert json.loads(tools_block) == {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluate an arithmetic expression.",
            "parameters": CALC.parameters,
        },
    }
    assert (
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        in prompt
    )
    assert prompt.count("Be brief.") == 1


def test_assistant_tool_calls_and_grouped_results() -> None:
    messages: list[Message] = [
        UserMessage(content="sum and product?"),
        AssistantMessage(content="Computing.", tool_calls=(_call("a", "2+3"), _call("b", "2*3"))),
        ToolResultMessage(call_id="a", name="calculator", content="5"),
        ToolResultMessage(call_id="b", name="calculator", content="6"),
    ]
    prompt = render_prompt(messages, [CALC])
    assert prompt.endswith(
        "<|im_start|>assistant\nComputing.\n"
        '<tool_call>\n{"name": "calculator", "arguments": {"expression": "2+3"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "calculator", "arguments": {"expression": "2*3"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n5\n</tool_response>\n<tool_response>\n6\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_non_ascii_is_kept_as_written() -> None:
    prompt = render_prompt([UserMessage(content="é")], [WEATHER])
    assert "Zürich" in prompt and "\\u00fc" not in prompt


def test_later_system_messages_stay_in_place() -> None:
    prompt = render_prompt([UserMessage(content="hi"), SystemMessage(content="Answer in French.")])
    assert prompt.startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\nhi")
    assert prompt.endswith("<|im_start|>system\nAnswer in French.<|im_end|>\n<|im_start|>assistant\n")


def test_each_step_extends_the_previous_prompt_and_answer() -> None:
    """What llama.cpp evaluated at step N (prompt + answer) is a prefix of step N+1's prompt."""
    step1: list[Message] = [UserMessage(content="What is 17*23?")]
    call = _call("call_0", "17*23")
    answer1 = f"<tool_call>\n{render_call(call)}\n</tool_call>"
    step2 = [
        *step1,
        AssistantMessage(tool_calls=(call,)),
        ToolResultMessage(call_id="call_0", name="calculator", content="391"),
    ]
    assert render_prompt(step2, [CALC]).startswith(render_prompt(step1, [CALC]) + answer1)

    answer2 = "17*23 is 391."
    step3 = [*step2, AssistantMessage(content=answer2), UserMessage(content="And 391*2?")]
    assert render_prompt(step3, [CALC]).startswith(render_prompt(step2, [CALC]) + answer2)


def test_text_before_a_call_renders_as_the_model_wrote_it() -> None:
    step1: list[Message] = [UserMessage(content="What is 17*23?")]
    call = _call("call_0", "17*23")
    # the model writes "Let me compute.\n<tool_call>...": the template puts one newline between
    answer1 = f"Let me compute.\n<tool_call>\n{render_call(call)}\n</tool_call>"
    step2 = [*step1, AssistantMessage(content="Let me compute.", tool_calls=(call,))]
    assert render_prompt(step2, [CALC]).startswith(render_prompt(step1, [CALC]) + answer1)


# -- against the template in the GGUF file ------------------------------------------------------

CONVERSATIONS: list[tuple[Sequence[Message], Sequence[ToolDefinition]]] = [
    ([UserMessage(content="hi")], []),
    ([SystemMessage(content="Be brief."), UserMessage(content="hi"), AssistantMessage(content="Hello!")], []),
    (
        [
            SystemMessage(content="You help with sums."),
            UserMessage(content="What is 17*23 and 2+2? ünïcödé"),
            AssistantMessage(content="Computing.", tool_calls=(_call("a", "17*23"), _call("b", "2+2"))),
            ToolResultMessage(call_id="a", name="calculator", content="391"),
            ToolResultMessage(call_id="b", name="calculator", content="4"),
            AssistantMessage(content="391 and 4."),
            UserMessage(content="thanks"),
            AssistantMessage(
                tool_calls=(ToolCall(call_id="c", name="get_weather", arguments='{"city": broken'),)
            ),
            ToolResultMessage(call_id="c", name="get_weather", content="error: bad JSON", is_error=True),
            SystemMessage(content="Answer now."),
        ],
        [CALC, WEATHER],
    ),
    ([UserMessage(content="hi")], [WEATHER]),
]


def _template_dict(message: Message) -> dict[str, Any]:
    data = message.model_dump()
    if isinstance(message, AssistantMessage):
        data["tool_calls"] = [
            {"type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    return data


@pytest.mark.model
@pytest.mark.parametrize(("messages", "tools"), CONVERSATIONS)
def test_matches_the_gguf_chat_template_token_for_token(
    messages: Sequence[Message], tools: Sequence[ToolDefinition], gguf_vocab: Any
) -> None:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    # transformers' `tojson`: plain json.dumps, non-ASCII kept (jinja2's own escapes HTML and sorts keys)
    env.filters["tojson"] = lambda value, **_: json.dumps(value, ensure_ascii=False)
    template = env.from_string(gguf_vocab.metadata["tokenizer.chat_template"])
    expected = template.render(
        messages=[_template_dict(m) for m in messages],
        tools=[tool_json(t) for t in tools] or None,
        add_generation_prompt=True,
    )
    mine = render_prompt(messages, tools)
    assert mine == expected

    def tokens(text: str) -> list[int]:
        return gguf_vocab.tokenize(text.encode(), add_bos=False, special=True)

    assert tokens(mine) == tokens(expected)


@pytest.fixture(scope="module")
def gguf_vocab() -> Iterator[Any]:
    """The 0.5B GGUF's tokenizer and metadata only (no weights): loads in a fraction of a second."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="the local backend needs tether[local]")
    from tether.models._gguf import ensure_model_file

    vocab = llama_cpp.Llama(
        model_path=str(ensure_model_file("qwen2.5-coder-0.5b")), vocab_only=True, verbose=False
    )
    yield vocab
    vocab.close()
