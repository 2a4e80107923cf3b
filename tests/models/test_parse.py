"""Reading tool calls out of small models' text: every shape Qwen 0.5B/1.5B were seen to write."""

from __future__ import annotations

import pytest

from tether.models import ToolCall
from tether.models._parse import (
    ARGUMENTS_AS_STRING,
    BARE_JSON_CALL,
    CALL_LIST,
    DOUBLE_BRACES,
    FAKE_TOOL_RESPONSE,
    FENCED_JSON_CALL,
    FUNCTION_WRAPPER,
    MISSING_ARGUMENTS,
    PARAMETERS_KEY,
    PYTHON_LITERAL,
    TRAILING_COMMA,
    UNPARSED_ARGUMENTS,
    UNTERMINATED_TOOL_CALL,
    ParsedText,
    parse_tool_calls,
)

CALC = '{"name": "calculator", "arguments": {"expression": "17*23"}}'
CALC_CALL = ToolCall(call_id="call_0", name="calculator", arguments={"expression": "17*23"})


def test_plain_text_has_no_calls() -> None:
    assert parse_tool_calls("  The answer is 391.\n") == ParsedText(text="The answer is 391.")


def test_tagged_call_as_the_template_asks() -> None:
    parsed = parse_tool_calls(f"<tool_call>\n{CALC}\n</tool_call>")
    assert parsed == ParsedText(text="", calls=(CALC_CALL,))


def test_text_before_a_tagged_call_is_kept() -> None:
    parsed = parse_tool_calls(f"Let me compute that.\n<tool_call>\n{CALC}\n</tool_call>")
    assert parsed.text == "Let me compute that."
    assert parsed.calls == (CALC_CALL,)
    assert parsed.repairs == ()


def test_several_tagged_calls_get_ids_in_order() -> None:
    text = (
        '<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    )
    calls = parse_tool_calls(text).calls
    assert [(c.call_id, c.arguments) for c in calls] == [
        ("call_0", {"city": "Paris"}),
        ("call_1", {"city": "Oslo"}),
    ]


def test_unterminated_call_at_the_end() -> None:
    parsed = parse_tool_calls(f"<tool_call>\n{CALC}")
    assert parsed.calls == (CALC_CALL,)
    assert parsed.repairs == (UNTERMINATED_TOOL_CALL,)


def test_unterminated_call_followed_by_another() -> None:
    parsed = parse_tool_calls(f"<tool_call>{CALC}\n<tool_call>{CALC.replace('17*23', '1+1')}</tool_call>")
    assert [c.arguments for c in parsed.calls] == [{"expression": "17*23"}, {"expression": "1+1"}]
    assert UNTERMINATED_TOOL_CALL in parsed.repairs


def test_bare_json_call() -> None:
    parsed = parse_tool_calls(CALC)
    assert parsed == ParsedText(text="", calls=(CALC_CALL,), repairs=(BARE_JSON_CALL,))


def test_bare_json_call_inside_prose() -> None:
    parsed = parse_tool_calls(f"I will call the tool: {CALC} and then answer.")
    assert parsed.calls == (CALC_CALL,)
    assert parsed.text == "I will call the tool:  and then answer."


def test_fenced_json_call() -> None:
    parsed = parse_tool_calls(f"Sure!\n```json\n{CALC}\n```\nDone.")
    assert parsed.calls == (CALC_CALL,)
    assert parsed.text == "Sure!\n\nDone."
    assert parsed.repairs == (FENCED_JSON_CALL,)


def test_fence_inside_tool_call_tags() -> None:
    parsed = parse_tool_calls(f"<tool_call>\n```json\n{CALC}\n```\n</tool_call>")
    assert parsed.calls == (CALC_CALL,)
    assert parsed.repairs == (FENCED_JSON_CALL,)


def test_double_braces_bare() -> None:
    parsed = parse_tool_calls("{" + CALC + "}")
    assert parsed.calls == (CALC_CALL,)
    assert parsed.text == ""
    assert parsed.repairs == (BARE_JSON_CALL, DOUBLE_BRACES)


def test_double_braces_in_tags() -> None:
    parsed = parse_tool_calls("<tool_call>\n{" + CALC + "}\n</tool_call>")
    assert parsed.calls == (CALC_CALL,)
    assert parsed.repairs == (DOUBLE_BRACES,)


def test_parameters_instead_of_arguments() -> None:
    parsed = parse_tool_calls(
        '<tool_call>{"name": "calculator", "parameters": {"expression": "17*23"}}</tool_call>'
    )
    assert parsed.calls == (CALC_CALL,)
    assert parsed.repairs == (PARAMETERS_KEY,)


def test_arguments_as_a_json_string() -> None:
    text = '<tool_call>{"name": "calculator", "arguments": "{\\"expression\\": \\"17*23\\"}"}</tool_call>'
    parsed = parse_tool_calls(text)
    assert parsed.calls == (CALC_CALL,)
    assert parsed.repairs == (ARGUMENTS_AS_STRING,)


def test_openai_function_wrapper() -> None:
    parsed = parse_tool_calls('<tool_call>{"type": "function", "function": ' + CALC + "}</tool_call>")
    assert parsed.calls == (CALC_CALL,)
    assert parsed.repairs == (FUNCTION_WRAPPER,)


def test_list_of_calls() -> None:
    parsed = parse_tool_calls(f"[{CALC}, {CALC.replace('17*23', '2+2')}]")
    assert [c.arguments for c in parsed.calls] == [{"expression": "17*23"}, {"expression": "2+2"}]
    assert parsed.text == ""
    assert parsed.repairs == (BARE_JSON_CALL, CALL_LIST)


def test_python_literal_syntax() -> None:
    parsed = parse_tool_calls(
        "<tool_call>{'name': 'calculator', 'arguments': {'expression': '17*23'}}</tool_call>"
    )
    assert parsed.calls == (CALC_CALL,)
    assert parsed.repairs == (PYTHON_LITERAL,)


def test_trailing_comma() -> None:
    parsed = parse_tool_calls(
        '<tool_call>{"name": "calculator", "arguments": {"expression": "17*23",},}</tool_call>'
    )
    assert parsed.calls == (CALC_CALL,)
    assert parsed.repairs == (TRAILING_COMMA,)


def test_call_without_arguments_in_tags() -> None:
    parsed = parse_tool_calls('<tool_call>{"name": "now"}</tool_call>')
    assert parsed.calls == (ToolCall(call_id="call_0", name="now", arguments={}),)
    assert parsed.repairs == (MISSING_ARGUMENTS,)


def test_broken_arguments_are_kept_as_text_for_the_model_to_see() -> None:
    parsed = parse_tool_calls(
        '<tool_call>{"name": "calculator", "arguments": {"expression": 17*23}}</tool_call>'
    )
    (call,) = parsed.calls
    assert call.name == "calculator"
    assert call.arguments == '{"expression": 17*23}'
    assert parsed.repairs == (UNPARSED_ARGUMENTS,)


def test_truncated_call_keeps_its_name() -> None:
    parsed = parse_tool_calls('<tool_call>\n{"name": "calculator", "arguments": {"expression": "17*')
    (call,) = parsed.calls
    assert call.name == "calculator"
    assert isinstance(call.arguments, str)
    assert set(parsed.repairs) == {UNTERMINATED_TOOL_CALL, UNPARSED_ARGUMENTS}


def test_fake_transcript_is_cut_at_the_first_tool_response() -> None:
    text = f"<tool_call>\n{CALC}\n</tool_call>\n<tool_response>\n391\n</tool_response>\nThe answer is 391."
    parsed = parse_tool_calls(text)
    assert parsed.calls == (CALC_CALL,)
    assert parsed.text == ""
    assert parsed.repairs == (FAKE_TOOL_RESPONSE,)


def test_fake_tool_response_without_a_call() -> None:
    parsed = parse_tool_calls("Checking.\n<tool_response>\n{}\n</tool_response>\nIt is sunny.")
    assert parsed == ParsedText(text="Checking.", repairs=(FAKE_TOOL_RESPONSE,))


def test_the_answer_seen_from_qwen_05b_after_a_tool_result() -> None:
    # the 0.5B model repeats a bare call line after line until it runs out of tokens
    line = '{"name": "calculator", "arguments": {"expression": "391"}}\n'
    parsed = parse_tool_calls(line * 3 + '{"name": "calculator", "argu')
    assert [c.call_id for c in parsed.calls] == ["call_0", "call_1", "call_2"]
    assert BARE_JSON_CALL in parsed.repairs


@pytest.mark.parametrize(
    "text",
    [
        'The config is {"name": "prod", "replicas": 3}.',
        'Use {"name": "Bob"} as the payload.',
        "It's {'a': 1} or [1, 2, 3] - don't worry.",
        "```python\nprint({'x': 1})\n```",
        "def f(d):\n    return d['name']\n",
        'unbalanced { brace and "name": here',
        "<tool_call>not json at all</tool_call>",
    ],
)
def test_prose_and_code_are_left_alone(text: str) -> None:
    parsed = parse_tool_calls(text)
    assert parsed.calls == ()
    assert parsed.text == text.strip()
    assert parsed.repairs == ()


def test_long_code_answer_is_parsed_quickly() -> None:
    import time

    code = "data = {'key': [1, 2, {'nested': (3, 4)}]}\n" * 2000
    started = time.perf_counter()
    parsed = parse_tool_calls(code)
    assert parsed.calls == ()
    assert time.perf_counter() - started < 1.0
