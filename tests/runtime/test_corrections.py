"""Corrections the model has moved past leave its view; the tool guide; where a correction points."""

from __future__ import annotations

import pytest

from tether import Agent, Runner, tool
from tether.approvals import TierPolicy
from tether.exceptions import ConfigError
from tether.grounding import TOOL_GUIDE
from tether.journal import AnswerRejected, MemoryStore, ToolFailed
from tether.models import (
    AssistantMessage,
    ModelResponse,
    SystemMessage,
    ToolCall,
    ToolResultMessage,
    UserMessage,
)
from tether.runtime._context import fold_corrections
from tether.testing import ScriptedModel, call

pytestmark = pytest.mark.anyio


@tool(idempotent=True)
def lookup_order(order_id: str) -> dict:
    """Read an order."""
    if order_id != "1042":
        raise LookupError(f"there is no order {order_id!r}")
    return {"order_id": "1042", "unit_price": 37.9, "quantity": 3}


@tool(idempotent=True)
def calculator(expression: str) -> float:
    """Evaluate arithmetic."""
    return round(float(eval(expression, {"__builtins__": {}})), 2)  # noqa: S307 - digits and operators only in these tests


@tool(risk="high", reversible=False, requires=("lookup_order",))
def refund(order_id: str, amount: float) -> str:
    """Refund an amount on an order."""
    return f"refunded {amount} on {order_id}"


# every tier runs without a person: what stops a wrong write in these tests is a guard
EVERY_TIER_RUNS = TierPolicy(tiers={"medium": "run", "high": "run", "critical": "run"}, confidence_floor=0.0)


def _hr_tools(writes: list[float]) -> tuple:
    """find_employee (Priya Raman, E-1021, salary 82000) and an update_salary that records its writes."""

    @tool(idempotent=True)
    def find_employee(name: str) -> dict:
        """Find an employee by name."""
        return {"employee_id": "E-1021", "name": name, "salary": 82000}

    @tool(risk="high", reversible=False, requires=("find_employee",))
    def update_salary(employee_id: str, new_salary: float) -> dict:
        """Set an employee's salary."""
        writes.append(new_salary)
        return {"employee_id": employee_id, "salary": new_salary}

    return find_employee, update_salary


async def _refusals(store: MemoryStore, run_id: str) -> list[ToolFailed]:
    """The calls a run refused or that failed, in order."""
    return [s.event for s in await store.load(run_id) if isinstance(s.event, ToolFailed)]


def _call(call_id: str, name: str, **arguments: object) -> ToolCall:
    return ToolCall(call_id=call_id, name=name, arguments=arguments)


def test_a_refused_call_and_a_rejected_answer_leave_the_view_once_the_model_moves_on() -> None:
    messages = [
        SystemMessage(content="rules"),
        UserMessage(content="refund 2 kettles of order 1042"),
        AssistantMessage(tool_calls=(_call("c1", "refund", order_id="1042", amount=12.0),)),
        ToolResultMessage(call_id="c1", name="refund", content="Error: refund was not run", is_error=True),
        AssistantMessage(tool_calls=(_call("c2", "lookup_order", order_id="1042"),)),
        ToolResultMessage(call_id="c2", name="lookup_order", content='{"unit_price": 37.9}'),
        AssistantMessage(content="You get $12.00 back."),
        UserMessage(content="Your answer was not shown to the user: ..."),
        AssistantMessage(tool_calls=(_call("c3", "calculator", expression="2 * 37.9"),)),
        ToolResultMessage(call_id="c3", name="calculator", content="75.8"),
    ]
    folded = fold_corrections(messages, {"c1"}, {6, 7})
    # the refused refund and the rejected "$12.00" are gone; what tools returned stays, in order
    assert folded == [messages[i] for i in (0, 1, 4, 5, 8, 9)]
    assert messages[2] in messages  # the run's own history is never changed
    # the latest turn stays in view even when it was refused: the model must see why
    latest = fold_corrections(messages[:4], {"c1"}, set())
    assert latest == messages[:4]


def test_a_turn_with_one_refused_call_of_two_keeps_the_call_that_ran() -> None:
    both = AssistantMessage(
        tool_calls=(
            _call("a", "lookup_order", order_id="1042"),
            _call("b", "refund", order_id="1042", amount=1.5),
        )
    )
    messages = [
        UserMessage(content="x"),
        both,
        ToolResultMessage(call_id="a", name="lookup_order", content="{}"),
        ToolResultMessage(call_id="b", name="refund", content="Error: refused", is_error=True),
        AssistantMessage(content="done"),
    ]
    folded = fold_corrections(messages, {"b"}, set())
    assert [type(m).__name__ for m in folded] == [
        "UserMessage",
        "AssistantMessage",
        "ToolResultMessage",
        "AssistantMessage",
    ]
    assert [c.call_id for c in folded[1].tool_calls] == ["a"]  # type: ignore[union-attr]


async def test_the_model_is_not_shown_its_refused_call_after_it_moved_on() -> None:
    model = ScriptedModel(
        [
            call("refund", order_id="1042", amount=12.0),  # refused: requires lookup_order
            call("lookup_order", order_id="1042"),
            call("calculator", expression="2 * 37.9"),
            "You get $75.80 back.",
        ]
    )
    agent = Agent("support", tools=[lookup_order, calculator, refund], model=model)
    result = await Runner(MemoryStore()).run(agent, "Refund 2 kettles of order 1042: how much?")
    assert result.ok and result.output == "You get $75.80 back."
    shown_second = model.requests[1]
    shown_third = model.requests[2]
    assert any("12.0" in str(getattr(m, "tool_calls", "")) for m in shown_second)  # just refused: in view
    assert not any("12.0" in str(getattr(m, "tool_calls", "")) for m in shown_third)  # moved on: folded


async def test_an_invented_argument_limits_the_next_call_to_the_reads_not_yet_made() -> None:
    model = ScriptedModel(
        [
            call("lookup_order", order_id="1042"),
            call("refund", order_id="1042", amount=75.0),  # 75.0 is in no result: refused
            call("calculator", expression="2 * 37.9"),
            "You get $75.80 back.",
        ]
    )
    agent = Agent("support", tools=[lookup_order, calculator, refund], model=model)
    store = MemoryStore()
    result = await Runner(store).run(agent, "How much do 2 kettles of order 1042 come to?")
    assert result.ok
    (refused,) = await _refusals(store, result.run_id)
    assert refused.kind == "ungrounded" and refused.needs == ("calculator",)
    assert "Call calculator first" in refused.message
    assert model.request_settings[2].allowed_tools == ("calculator",)
    assert model.request_settings[2].tool_choice == "required"


async def test_a_settled_error_is_answered_from_the_journal_on_a_repeat() -> None:
    runs: list[str] = []

    @tool(idempotent=True, name="lookup_order")
    def counting_lookup(order_id: str) -> dict:
        """Read an order."""
        runs.append(order_id)
        raise LookupError(f"there is no order named {order_id!r}")

    model = ScriptedModel(
        [
            call("lookup_order", order_id="Bob's"),
            call("lookup_order", order_id="Bob's"),
            "There is no such order.",
        ]
    )
    result = await Runner(MemoryStore()).run(Agent("a", tools=[counting_lookup], model=model), "Bob's order?")
    assert result.ok and runs == ["Bob's"]  # raised once; the repeat was answered, not run


async def test_the_tool_guide_follows_the_instructions_of_an_agent_with_tools() -> None:
    def system_of(agent: Agent) -> str:
        model = agent.model
        return model.requests[0][0].content if isinstance(model.requests[0][0], SystemMessage) else ""  # type: ignore[attr-defined]

    with_tools = Agent(
        "a", instructions="Be brief.", tools=[lookup_order], tool_guide=True, model=ScriptedModel(["ok"])
    )
    await Runner(MemoryStore()).run(with_tools, "hi")
    assert system_of(with_tools) == f"Be brief.\n\n{TOOL_GUIDE}"

    off = Agent(
        "b", instructions="Be brief.", tools=[lookup_order], tool_guide=False, model=ScriptedModel(["ok"])
    )
    await Runner(MemoryStore()).run(off, "hi")
    assert system_of(off) == "Be brief."

    own = Agent("c", tools=[lookup_order], tool_guide="Look things up.", model=ScriptedModel(["ok"]))
    await Runner(MemoryStore()).run(own, "hi")
    assert system_of(own) == "Look things up."

    no_tools = Agent("d", instructions="Be brief.", tool_guide=True, model=ScriptedModel(["ok"]))
    await Runner(MemoryStore()).run(no_tools, "hi")
    assert system_of(no_tools) == "Be brief."

    with pytest.raises(ConfigError, match="tool_guide must be True, False or a string"):
        Agent("e", tools=[lookup_order], tool_guide=1)  # type: ignore[arg-type]


async def test_the_same_call_written_several_times_in_one_turn_is_no_loop() -> None:
    runs: list[str] = []

    @tool(idempotent=True, name="lookup_order")
    def counting_lookup(order_id: str) -> dict:
        """Read an order."""
        runs.append(order_id)
        return {"order_id": order_id, "status": "shipped"}

    same = [_call(f"c{i}", "lookup_order", order_id="1042") for i in range(4)]
    model = ScriptedModel([ModelResponse(tool_calls=tuple(same)), "Order 1042 has shipped."])
    result = await Runner(MemoryStore()).run(
        Agent("a", tools=[counting_lookup], model=model), "Where is order 1042?"
    )
    assert result.ok and result.output == "Order 1042 has shipped."
    assert runs == ["1042"]  # ran once; the copies were answered from its result


@pytest.mark.parametrize(
    ("request_text", "rejected"),
    [
        ("Which version is described in project/README.md?", True),  # a path, no digit in it
        ("What does order 1042 contain?", True),
        ("Hello, what can you do?", False),  # names no record: a conversational answer stands
    ],
)
async def test_an_answer_about_a_named_record_before_any_call_is_sent_back(
    request_text: str, rejected: bool
) -> None:
    model = ScriptedModel(["It says version 1.0 everywhere.", call("lookup_order", order_id="1042"), "Done."])
    store = MemoryStore()
    result = await Runner(store).run(Agent("a", tools=[lookup_order], model=model), request_text)

    sent_back = [s.event for s in await store.load(result.run_id) if isinstance(s.event, AnswerRejected)]
    assert bool(sent_back) is rejected
    if rejected:
        assert sent_back[0].reason.startswith("no tool was called") and sent_back[0].then == "tool"
        assert model.request_settings[1].tool_choice == "required"
    else:
        assert result.output == "It says version 1.0 everywhere."


async def test_a_write_that_sets_the_value_a_lookup_already_shows_is_refused() -> None:
    writes: list[float] = []
    find_employee, update_salary = _hr_tools(writes)

    model = ScriptedModel(
        [
            call("find_employee", name="Priya Raman"),
            call("update_salary", employee_id="E-1021", new_salary=82000.00000000001),  # the current value
            call("calculator", expression="82000 * 1.1"),
            call("update_salary", employee_id="E-1021", new_salary=90200.0),
            "Her new salary is $90,200.",
        ]
    )
    store = MemoryStore()
    agent = Agent("hr", tools=[find_employee, update_salary, calculator], model=model, policy=EVERY_TIER_RUNS)
    result = await Runner(store).run(agent, "Give Priya Raman a 10% raise.")
    assert result.ok and writes == [90200.0]  # the no-op write never ran
    (refused,) = await _refusals(store, result.run_id)
    assert refused.error_type == "NoChange" and refused.kind == "precondition"
    assert (
        "is the salary find_employee already shows for E-1021, so it would change nothing" in refused.message
    )


@pytest.mark.parametrize(
    ("answer", "sent_back"),
    [
        ("Her new salary would be $90,200.", True),  # the raise worked out, never written
        ("I could not change her salary; it stays at 82000.", False),  # says nothing changed
        ("Her raise is 8,200 a year.", False),  # not a new salary: the size of the raise
    ],
)
async def test_a_new_value_stated_after_its_write_was_refused_as_a_no_op_is_sent_to_the_write(
    answer: str, sent_back: bool
) -> None:
    writes: list[float] = []
    find_employee, update_salary = _hr_tools(writes)

    model = ScriptedModel(
        [
            call("find_employee", name="Priya Raman"),
            call("update_salary", employee_id="E-1021", new_salary=82000),  # the current value: refused
            answer,
            call("calculator", expression="82000 * 1.1"),
            call("update_salary", employee_id="E-1021", new_salary=90200.0),
            "Her new salary is $90,200.",
        ]
    )
    store = MemoryStore()
    agent = Agent("hr", tools=[find_employee, update_salary, calculator], model=model, policy=EVERY_TIER_RUNS)
    result = await Runner(store).run(agent, "Give Priya Raman a 10% raise and tell me her new salary.")
    rejected = [s.event for s in await store.load(result.run_id) if isinstance(s.event, AnswerRejected)]
    if not sent_back:
        assert result.output == answer and writes == [] and not rejected
        return
    assert result.ok and result.output == "Her new salary is $90,200." and writes == [90200.0]
    (told,) = rejected
    assert told.reason.startswith("the answer states a new value that no write has made (update_salary)")
    assert (told.then, told.needs) == ("tool", ("calculator",))
    assert (
        "update_salary has not run, so nothing was changed (new_salary is still 82000 for employee_id=E-1021)"
        in (told.message)
    )
    # the value it stated, with the calculation that gives it from the salary the lookup showed
    assert "If the user asked for the new value 90200, call calculator with '1.1 * 82000'" in told.message
    assert model.request_settings[3].tool_choice == "required"  # the turn after it must call a tool


async def test_a_guessed_value_after_the_asked_record_was_not_found_gets_the_answer_to_give() -> None:
    @tool(idempotent=True)
    def convert_currency(amount: float, to_currency: str) -> dict:
        """Convert an amount."""
        return {"amount": amount * 0.92, "currency": to_currency}

    model = ScriptedModel(
        [
            call("lookup_order", order_id="3307"),  # there is no order 3307
            call("convert_currency", amount=123.45, to_currency="EUR"),  # a made-up total
            "Order 3307 was not found.",
        ]
    )
    store = MemoryStore()
    agent = Agent("a", tools=[lookup_order, convert_currency], model=model)
    result = await Runner(store).run(agent, "What is the total of order 3307 in euros?")
    assert result.ok and result.output == "Order 3307 was not found."
    failed = await _refusals(store, result.run_id)
    assert [f.error_type for f in failed] == ["LookupError", "RecordMissing"]
    assert failed[1].message.startswith("lookup_order said: there is no order '3307'")
    assert "amount=123.45 would be a guess" in failed[1].message
    assert model.request_settings[2].tool_choice == "none"  # the next turn is the answer


@tool(idempotent=True)
def convert_currency(amount: float, to_currency: str) -> dict:
    """Convert an amount of dollars."""
    return {"amount": round(amount * 0.79, 2), "currency": to_currency}


async def test_a_recipe_that_names_a_read_not_yet_made_is_sent_to_that_read() -> None:
    model = ScriptedModel(
        [
            call("lookup_order", order_id="1042"),
            "To get it in pounds, use the `convert_currency` function with the unit price.",
            call("convert_currency", amount=37.9, to_currency="GBP"),
            "The kettle costs £29.94.",
        ]
    )
    store = MemoryStore()
    agent = Agent("a", tools=[lookup_order, calculator, convert_currency], model=model)
    result = await Runner(store).run(agent, "What does the kettle of order 1042 cost in pounds?")
    assert result.ok and result.output == "The kettle costs £29.94."
    (rejected,) = [s.event for s in await store.load(result.run_id) if isinstance(s.event, AnswerRejected)]
    # it named convert_currency, not the calculator: the next call is limited to what it described
    assert rejected.then == "tool" and rejected.needs == ("convert_currency",)


async def test_a_recipe_naming_only_tools_that_ran_gets_the_request_quoted_back() -> None:
    model = ScriptedModel(
        [
            call("lookup_order", order_id="1042"),
            "To answer, you can use the lookup_order function with the order id 1042.",
            "Order 1042 has 3 items at $37.90.",
        ]
    )
    store = MemoryStore()
    agent = Agent("a", tools=[lookup_order, calculator], model=model)
    result = await Runner(store).run(agent, "What is in order 1042?")
    assert result.ok and result.output == "Order 1042 has 3 items at $37.90."
    (rejected,) = [s.event for s in await store.load(result.run_id) if isinstance(s.event, AnswerRejected)]
    assert rejected.then == "either" and rejected.needs == ()
    assert 'Answer the user\'s request "What is in order 1042?" from them now' in rejected.message


async def test_a_rejected_answer_before_any_tool_ran_is_sent_to_the_reads() -> None:
    model = ScriptedModel(
        ['{"name": "lookup_order", "arguments": {}}', call("lookup_order", order_id="1042"), "3."]
    )
    store = MemoryStore()
    result = await Runner(store).run(
        Agent("a", tools=[lookup_order], model=model), "How many kettles in order 1042?"
    )
    assert result.ok
    (rejected,) = [s.event for s in await store.load(result.run_id) if isinstance(s.event, AnswerRejected)]
    assert rejected.then == "tool" and rejected.needs == ("lookup_order",)


@pytest.mark.parametrize("grounding", [True, False])
async def test_text_beside_a_call_leaves_the_view_with_grounding_on(grounding: bool) -> None:
    narrated = ModelResponse(
        text='The response from lookup_order is: {"unit_price": 99.0}',
        tool_calls=(_call("n1", "lookup_order", order_id="1042"),),
    )
    model = ScriptedModel([narrated, "It is $37.90 each."])
    agent = Agent("a", tools=[lookup_order], model=model, grounding=grounding)
    result = await Runner(MemoryStore()).run(agent, "Price of the kettle in order 1042?")
    assert result.ok
    (turn,) = [m for m in model.requests[1] if isinstance(m, AssistantMessage)]
    assert turn.tool_calls and (turn.content == "") is grounding  # the invented 99.0 is not shown back


async def test_an_instruction_is_not_quoted_back_and_a_write_written_as_text_is_not_the_next_call() -> None:
    model = ScriptedModel(
        [
            call("lookup_order", order_id="1042"),
            '{"name": "refund", "arguments": {"order_id": "1042", "amount": 37.9}}',  # a write, as text
            "Order 1042 has no blender, so nothing was refunded.",
        ]
    )
    store = MemoryStore()
    agent = Agent("a", tools=[lookup_order, refund], model=model)
    result = await Runner(store).run(agent, "Refund the blender from order 1042.")
    assert result.ok and result.output == "Order 1042 has no blender, so nothing was refunded."
    (rejected,) = [s.event for s in await store.load(result.run_id) if isinstance(s.event, AnswerRejected)]
    assert rejected.then == "answer"  # not "either": the refund it wrote out does not get to run
    assert "Refund the blender" not in rejected.message  # quoting an instruction made the model do it
    assert model.request_settings[2].tool_choice == "none"


async def test_a_write_whose_required_lookup_found_nothing_is_answered_not_sent_round() -> None:
    @tool(idempotent=True)
    def find_employee(name: str) -> dict:
        """Find an employee by name."""
        raise LookupError(f"there is no employee named {name!r}")

    @tool(risk="high", reversible=False, requires=("find_employee",))
    def update_salary(employee_id: str, new_salary: float) -> str:
        """Set a salary."""
        return "done"

    model = ScriptedModel(
        [
            call("find_employee", name="John Doe"),
            call("update_salary", employee_id="E-1", new_salary=95000),
            "There is no employee named John Doe.",
        ]
    )
    store = MemoryStore()
    agent = Agent("hr", tools=[find_employee, update_salary], model=model)
    result = await Runner(store).run(agent, "Set John Doe's salary to 95000.")
    assert result.ok
    failed = await _refusals(store, result.run_id)
    assert failed[-1].error_type == "RecordMissing"
    assert failed[-1].message.startswith("find_employee said: there is no employee named 'John Doe'")
    assert model.request_settings[2].tool_choice == "none"


async def test_a_rejected_answer_is_not_shown_back_even_on_the_next_turn() -> None:
    recipe = "To find it, you can use the `lookup_order` function with order 1042."
    model = ScriptedModel([call("lookup_order", order_id="1042"), recipe, "Order 1042: 3 kettles at $37.90."])
    result = await Runner(MemoryStore()).run(
        Agent("a", tools=[lookup_order], model=model), "What is in order 1042?"
    )
    assert result.ok
    shown = model.requests[2]
    assert not any(isinstance(m, AssistantMessage) and m.content == recipe for m in shown)
    assert isinstance(shown[-1], UserMessage) and shown[-1].content.startswith("Your answer was not shown")


async def test_after_a_lookup_found_nothing_an_unusable_answer_is_told_what_the_tool_said() -> None:
    model = ScriptedModel(
        [call("lookup_order", order_id="77"), '{"name": "lookup_order"}', "There is no order 77."]
    )
    store = MemoryStore()
    result = await Runner(store).run(Agent("a", tools=[lookup_order], model=model), "What is in order 77?")
    assert result.ok and result.output == "There is no order 77."
    (rejected,) = [s.event for s in await store.load(result.run_id) if isinstance(s.event, AnswerRejected)]
    assert rejected.then == "answer"
    assert "lookup_order said: there is no order '77'. Tell the user that" in rejected.message


def test_an_answered_repeat_is_a_user_turn_after_the_results_then_leaves() -> None:
    messages = [
        UserMessage(content="Summarise notes.txt"),
        AssistantMessage(tool_calls=(_call("r1", "read_file", path="notes.txt"),)),
        ToolResultMessage(call_id="r1", name="read_file", content="Revenue grew 12%."),
        AssistantMessage(tool_calls=(_call("r2", "read_file", path="notes.txt"),)),
        ToolResultMessage(
            call_id="r2", name="read_file", content="Error: already called; answer now", is_error=True
        ),
    ]
    view = fold_corrections(messages, {"r2"}, set(), answered={"r2"})
    # the repeat is gone; what the runtime said to it follows the real result as the user's turn
    assert view == [*messages[:3], UserMessage(content="already called; answer now")]
    later = [*messages, AssistantMessage(content="Revenue grew 12%.")]
    assert fold_corrections(later, {"r2"}, set(), answered={"r2"}) == [*messages[:3], later[-1]]


async def test_a_model_that_numbers_its_calls_per_turn_loses_no_result() -> None:
    # the in-process model names the first call of every turn call_0: a refused call_0 must not take
    # a later successful call_0's result out of view with it
    model = ScriptedModel(
        [
            ModelResponse(tool_calls=(_call("call_0", "refund", order_id="1042", amount=12.0),)),  # refused
            ModelResponse(tool_calls=(_call("call_0", "lookup_order", order_id="1042"),)),
            ModelResponse(tool_calls=(_call("call_0", "calculator", expression="2 * 37.9"),)),
            "You get $75.80 back.",
        ]
    )
    store = MemoryStore()
    agent = Agent("a", tools=[lookup_order, calculator, refund], model=model)
    result = await Runner(store).run(agent, "How much are 2 kettles of order 1042?")
    assert result.ok
    last_view = model.requests[-1]
    results = [m.content for m in last_view if isinstance(m, ToolResultMessage)]
    assert any("37.9" in r for r in results) and "75.8" in results  # the lookup and the calculation
    events = [s.event for s in await store.load(result.run_id)]
    done = [e.call_id for e in events if e.type == "tool_completed"]
    assert done == ["call_0-s2", "call_0-s3"]
    from tether.runtime._loop import _State

    rebuilt = _State.rebuild(result.run_id, events)
    assert [
        m.tool_calls[0].call_id for m in rebuilt.messages if isinstance(m, AssistantMessage) and m.tool_calls
    ] == [
        "call_0",
        "call_0-s2",
        "call_0-s3",
    ]


@pytest.mark.parametrize("tool_guide", [False, True])
async def test_an_answer_before_calling_the_tool_the_instructions_name_is_sent_back(tool_guide: bool) -> None:
    @tool(idempotent=True)
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "18 degrees and sunny"

    model = ScriptedModel(
        ["It is sunny in Paris.", call("get_weather", city="Paris"), "18 degrees and sunny."]
    )
    store = MemoryStore()
    agent = Agent(
        "w",
        instructions="Call get_weather, then answer in one sentence.",
        tools=[get_weather, calculator],  # the guide's "call a calculator tool" names no tool of the agent's
        tool_guide=tool_guide,
        model=model,
    )
    result = await Runner(store).run(agent, "What is the weather in Paris?")
    assert result.ok and result.output == "18 degrees and sunny."
    (rejected,) = [s.event for s in await store.load(result.run_id) if isinstance(s.event, AnswerRejected)]
    assert rejected.reason == "no tool was called, though the instructions name get_weather"
    assert rejected.then == "tool"


async def test_the_tool_guide_naming_a_calculator_does_not_count_as_the_instructions_naming_it() -> None:
    model = ScriptedModel(["Hello! I can look orders up."])
    agent = Agent("a", instructions="Be brief.", tools=[calculator], tool_guide=True, model=model)
    result = await Runner(MemoryStore()).run(agent, "Hello, what can you do?")
    assert result.ok and result.output == "Hello! I can look orders up."


async def test_a_number_a_power_of_ten_off_a_result_is_sent_back_with_the_value_the_results_give() -> None:
    @tool(idempotent=True)
    def get_department(department: str) -> dict:
        """A department's budget."""
        return {"department": department, "annual_budget": 2400000, "headcount": 14}

    model = ScriptedModel(
        [
            call("get_department", department="Engineering"),
            "The annual budget of Engineering is $24,000,000.",  # a zero too many
            "The annual budget of Engineering is $2,400,000.",
        ]
    )
    store = MemoryStore()
    agent = Agent("hr", tools=[get_department], model=model)
    result = await Runner(store).run(agent, "What is the Engineering department's budget?")
    assert result.ok and result.output == "The annual budget of Engineering is $2,400,000."
    (told,) = [s.event for s in await store.load(result.run_id) if isinstance(s.event, AnswerRejected)]
    assert told.values == ("$24,000,000",)
    assert "exactly as the tool results above give them (they give 2400000, not $24,000,000);" in told.message


async def test_an_invented_id_is_answered_with_the_ids_of_that_form_the_results_give() -> None:
    @tool(idempotent=True)
    def find_employee(name: str) -> dict:
        """Find an employee by name."""
        return {"employee_id": "E-1017", "name": name, "manager_id": "E-1009"}

    @tool(idempotent=True)
    def get_employee(employee_id: str) -> dict:
        """Look an employee up by id."""
        return {"employee_id": employee_id, "name": "Grace Okafor"}

    @tool(idempotent=True)
    def get_department(department: str) -> dict:
        """A department's budget."""
        return {"department": department, "annual_budget": 2400000}

    model = ScriptedModel(
        [
            call("find_employee", name="Dana Whitfield"),
            call("get_employee", employee_id="E-12345"),  # made up
            call("get_employee", employee_id="E-1009"),
            "Dana Whitfield's manager is Grace Okafor.",
        ]
    )
    store = MemoryStore()
    agent = Agent("hr", tools=[find_employee, get_employee, get_department], model=model)
    result = await Runner(store).run(agent, "Who is Dana Whitfield's manager?")
    assert result.ok and result.output == "Dana Whitfield's manager is Grace Okafor."
    (refused,) = await _refusals(store, result.run_id)
    assert (
        "The tool results so far give these ids of that form: E-1017 (employee_id in find_employee's result), "
        "E-1009 (manager_id in find_employee's result). Call get_employee again with the one the request is "
        "about. Use only values from the request and earlier results." in refused.message
    )
    assert refused.needs == ("get_employee",)  # the same tool again, with one of them
    assert model.request_settings[2].allowed_tools == ("get_employee",)


async def test_a_write_value_worked_out_in_the_head_is_sent_to_the_calculator_with_the_expression() -> None:
    writes: list[float] = []
    find_employee, update_salary = _hr_tools(writes)

    model = ScriptedModel(
        [
            call("find_employee", name="Priya Raman"),
            call("update_salary", employee_id="E-1021", new_salary=90200),  # 82000 x 1.1, in its head
            call("calculator", expression="82000 * (1 + 0.1)"),
            call("update_salary", employee_id="E-1021", new_salary=90200.0),
            "Her new salary is $90,200.",
        ]
    )
    store = MemoryStore()
    agent = Agent("hr", tools=[find_employee, update_salary, calculator], model=model, policy=EVERY_TIER_RUNS)
    result = await Runner(store).run(agent, "Give Priya Raman a 10% raise.")
    assert result.ok and writes == [90200.0]
    (refused,) = await _refusals(store, result.run_id)
    assert refused.message == (
        "update_salary was not run: new_salary=90200 is worked out (90200 = 1.1 * 82000), and a change is made "
        "only with values a tool returned. Call calculator with '1.1 * 82000' first, then call update_salary "
        "with its result."
    )
    assert refused.needs == ("calculator",)


async def test_an_answer_that_leaves_out_what_a_tool_said_is_missing_is_sent_back_once() -> None:
    model = ScriptedModel(
        [
            call("lookup_order", order_id="3307"),
            "To find the total of order 3307 in euros, please try again with a valid order number.",
            "There is no order 3307.",
        ]
    )
    store = MemoryStore()
    agent = Agent("shop", tools=[lookup_order], model=model)
    result = await Runner(store).run(agent, "What is the total of order 3307 in euros?")
    assert result.ok and result.output == "There is no order 3307."
    (told,) = [s.event for s in await store.load(result.run_id) if isinstance(s.event, AnswerRejected)]
    assert told.reason == "a tool said what was asked for is not there, and the answer does not say so"
    assert told.then == "answer"
    assert "lookup_order said: there is no order '3307'. Tell the user that" in told.message


async def test_an_argument_that_describes_the_value_is_sent_to_the_lookup_by_name() -> None:
    @tool(idempotent=True)
    def find_employee(name: str) -> dict:
        """Find an employee by name."""
        return {"employee_id": "E-1017", "name": name, "manager_id": "E-1009", "department": "Engineering"}

    @tool(idempotent=True)
    def get_department(department: str) -> dict:
        """A department's budget."""
        return {"department": department, "annual_budget": 2400000}

    model = ScriptedModel(
        [
            call("get_department", department="Dana Whitfield's manager"),
            call("find_employee", name="Dana Whitfield"),
            call("get_department", department="Engineering"),
            "Engineering's annual budget is 2,400,000.",
        ]
    )
    store = MemoryStore()
    agent = Agent("hr", tools=[find_employee, get_department], model=model)
    result = await Runner(store).run(
        agent, "What is the budget of the department of Dana Whitfield's manager?"
    )
    assert result.ok
    (refused,) = await _refusals(store, result.run_id)
    assert (refused.kind, refused.error_type, refused.needs) == (
        "ungrounded",
        "Description",
        ("find_employee",),
    )
    assert refused.message == (
        'get_department was not run: department="Dana Whitfield\'s manager" describes a value instead of giving '
        "it. Find Dana Whitfield's manager first (call find_employee with 'Dana Whitfield'), then call "
        "get_department with the department the results give."
    )
    assert model.request_settings[1].allowed_tools == ("find_employee",)


async def test_a_worked_out_value_for_a_write_nobody_asked_for_gets_no_calculator_expression() -> None:
    model = ScriptedModel(
        [
            call("lookup_order", order_id="1042"),
            call("refund", order_id="1042", amount=75.8),  # the user asked how much, not for a refund
            "They should get back $75.80.",
        ]
    )
    store = MemoryStore()
    agent = Agent("shop", tools=[lookup_order, calculator, refund], model=model, policy=EVERY_TIER_RUNS)
    result = await Runner(store).run(agent, "How much do 2 of the kettles from order 1042 come to?")
    assert result.ok
    (refused,) = await _refusals(store, result.run_id)
    assert refused.error_type == "Ungrounded" and "Call calculator with" not in refused.message


async def test_a_nonsense_sum_is_never_offered_as_the_calculation_for_a_write() -> None:
    find_employee, update_salary = _hr_tools([])

    model = ScriptedModel(
        [
            call("find_employee", name="Priya Raman"),
            call(
                "update_salary", employee_id="E-1021", new_salary=82000.1
            ),  # 82000 + 0.1: a 10% raise gone wrong
            "I could not work out the new salary.",
        ]
    )
    store = MemoryStore()
    agent = Agent("hr", tools=[find_employee, update_salary, calculator], model=model, policy=EVERY_TIER_RUNS)
    result = await Runner(store).run(agent, "Give Priya Raman a 10% raise.")
    (refused,) = await _refusals(store, result.run_id)
    assert refused.error_type == "Ungrounded" and "Call calculator with" not in refused.message


@pytest.mark.parametrize(
    ("request_text", "sent_back"),
    [
        ("What is the annual budget of the department Dana Whitfield's manager works in?", True),
        ("What does Dana Whitfield earn per hour?", False),  # no pointer the request names
    ],
)
async def test_an_answer_that_gives_up_while_a_result_points_at_the_record_asked_about_is_sent_there(
    request_text: str, sent_back: bool
) -> None:
    @tool(idempotent=True)
    def find_employee(name: str) -> dict:
        """Find an employee by name."""
        return {"employee_id": "E-1017", "name": name, "manager_id": "E-1009", "department": "Engineering"}

    @tool(idempotent=True)
    def get_employee(employee_id: str) -> dict:
        """Look an employee up by employee id (E-...)."""
        return {"employee_id": employee_id, "name": "Grace Okafor", "department": "Engineering"}

    gave_up = "The annual budget is not provided in the tool results."
    model = ScriptedModel(
        [
            call("find_employee", name="Dana Whitfield"),
            gave_up,
            call("get_employee", employee_id="E-1009"),
            "Grace Okafor manages Dana; her department's budget is not in the results.",
        ]
    )
    store = MemoryStore()
    agent = Agent("hr", tools=[find_employee, get_employee], model=model)
    result = await Runner(store).run(agent, request_text)
    rejected = [s.event for s in await store.load(result.run_id) if isinstance(s.event, AnswerRejected)]
    if not sent_back:
        assert result.output == gave_up and rejected == []
        return
    (told,) = rejected
    assert (told.then, told.needs, told.soft) == ("tool", ("get_employee",), True)
    assert (
        "the tool results point at E-1009 (their manager_id), which no tool has looked up yet" in told.message
    )


def _shop_lookups(ran: list[str]) -> tuple:
    """lookup_order (7702, placed by C-442) and lookup_customer (C-442), recording what ran."""

    @tool(idempotent=True)
    def lookup_order(order_id: str) -> dict:
        """Read an order by its number."""
        ran.append(f"lookup_order({order_id})")
        return {"order_id": "7702", "customer_id": "C-442"}

    @tool(idempotent=True)
    def lookup_customer(customer_id: str) -> dict:
        """Read a customer by customer id."""
        ran.append(f"lookup_customer({customer_id})")
        if customer_id != "C-442":
            raise LookupError(f"there is no customer {customer_id!r}")
        return {"customer_id": "C-442", "email": "j.chen@example.org"}

    return lookup_order, lookup_customer


async def test_a_value_the_request_labels_as_another_record_is_sent_to_that_records_lookup() -> None:
    ran: list[str] = []
    lookup_order, lookup_customer = _shop_lookups(ran)
    model = ScriptedModel(
        [
            call("lookup_customer", customer_id="7702"),  # the order's number, as a customer id
            call("lookup_order", order_id="7702"),
            call("lookup_customer", customer_id="C-442"),
            "Write to j.chen@example.org.",
        ]
    )
    store = MemoryStore()
    agent = Agent("shop", tools=[lookup_order, lookup_customer], model=model)
    result = await Runner(store).run(
        agent, "Which email should I use for the customer who placed order 7702?"
    )
    assert result.ok and result.output == "Write to j.chen@example.org."
    assert ran == ["lookup_order(7702)", "lookup_customer(C-442)"]  # the wrong lookup never ran
    (refused,) = await _refusals(store, result.run_id)
    assert (refused.kind, refused.error_type, refused.needs) == ("ungrounded", "WrongKind", ("lookup_order",))
    assert refused.message == (
        "lookup_customer was not run: 7702 is the order in the request ('order 7702'), not a customer_id. "
        "Look the order up with lookup_order first; its result gives the customer_id."
    )
    assert model.request_settings[1].allowed_tools == ("lookup_order",)


async def test_a_value_labelled_as_the_kind_the_tool_takes_runs() -> None:
    ran: list[str] = []
    lookup_order, lookup_customer = _shop_lookups(ran)
    model = ScriptedModel(
        [
            call("lookup_order", order_id="7702"),
            call("lookup_customer", customer_id="C-442"),
            "j.chen@example.org",
        ]
    )
    agent = Agent("shop", tools=[lookup_order, lookup_customer], model=model)
    result = await Runner(MemoryStore()).run(agent, "Who placed order number 7702? Customer C-442, I think.")
    assert result.ok and ran == ["lookup_order(7702)", "lookup_customer(C-442)"]


async def test_a_name_sent_as_an_id_is_sent_to_the_lookup_by_name() -> None:
    ran: list[str] = []

    @tool(idempotent=True)
    def find_employee(name: str) -> dict:
        """Find an employee by full name."""
        ran.append(f"find_employee({name})")
        return {"employee_id": "E-1017", "name": name, "manager_id": "E-1009"}

    @tool(idempotent=True)
    def get_employee(employee_id: str) -> dict:
        """Read an employee by employee id."""
        ran.append(f"get_employee({employee_id})")
        return {"employee_id": employee_id, "name": "Grace Okafor"}

    model = ScriptedModel(
        [
            call("get_employee", employee_id="Dana Whitfield"),
            call("find_employee", name="Dana Whitfield"),
            call("get_employee", employee_id="E-1009"),
            "Dana Whitfield's manager is Grace Okafor.",
        ]
    )
    store = MemoryStore()
    agent = Agent("hr", tools=[find_employee, get_employee], model=model)
    result = await Runner(store).run(agent, "Who is Dana Whitfield's manager?")
    assert result.ok
    assert ran == ["find_employee(Dana Whitfield)", "get_employee(E-1009)"]
    (refused,) = await _refusals(store, result.run_id)
    assert (refused.error_type, refused.needs) == ("WrongKind", ("find_employee",))
    assert refused.message == (
        "get_employee was not run: employee_id='Dana Whitfield' is a name; get_employee takes the employee_id "
        "itself. Look 'Dana Whitfield' up by name with find_employee first; its result gives the employee_id."
    )


async def test_a_name_sent_as_an_id_runs_when_no_tool_takes_a_name() -> None:
    @tool(idempotent=True)
    def get_account(account_id: str) -> dict:
        """Read an account."""
        return {"account_id": account_id, "plan": "team"}

    model = ScriptedModel([call("get_account", account_id="Blue Harbor"), "Blue Harbor is on the team plan."])
    agent = Agent("crm", tools=[get_account], model=model)
    result = await Runner(MemoryStore()).run(agent, "Which plan is the account Blue Harbor on?")
    assert result.ok and result.output == "Blue Harbor is on the team plan."


def _stock_tools(ran: list[str]) -> tuple:
    """find_product (Copper Saucepan, sku CS-402) and check_stock by sku, recording what ran."""

    @tool(idempotent=True)
    def find_product(name: str) -> dict:
        """Find a product by name."""
        ran.append(f"find_product({name})")
        if name.casefold().rstrip("s") != "copper saucepan":
            raise LookupError(f"there is no product named {name!r}")
        return {"sku": "CS-402", "name": "Copper Saucepan"}

    @tool(idempotent=True)
    def check_stock(sku: str) -> dict:
        """Units in stock by SKU."""
        ran.append(f"check_stock({sku})")
        if sku != "CS-402":
            raise LookupError(f"there is no SKU {sku!r}")
        return {"sku": "CS-402", "units": 2}

    return find_product, check_stock


async def test_a_product_name_sent_as_a_sku_is_sent_to_the_lookup_by_name() -> None:
    ran: list[str] = []
    model = ScriptedModel(
        [
            call("check_stock", sku="copper saucepans"),
            call("find_product", name="Copper Saucepans"),
            call("check_stock", sku="CS-402"),
            "There are 2 copper saucepans in stock.",
        ]
    )
    store = MemoryStore()
    agent = Agent("shop", tools=list(_stock_tools(ran)), model=model)
    result = await Runner(store).run(agent, "How many Copper Saucepans are in stock?")
    assert result.ok and ran == ["find_product(Copper Saucepans)", "check_stock(CS-402)"]
    (refused,) = await _refusals(store, result.run_id)
    assert (refused.error_type, refused.needs) == ("WrongKind", ("find_product",))
    assert "sku='copper saucepans' is a name" in refused.message


async def test_a_key_a_result_gave_sent_as_a_name_is_sent_to_the_read_that_takes_the_key() -> None:
    ran: list[str] = []
    model = ScriptedModel(
        [
            call("find_product", name="Copper Saucepan"),
            call("find_product", name="CS-402"),  # the sku it was just given, as a name
            call("check_stock", sku="CS-402"),
            "There are 2 copper saucepans in stock.",
        ]
    )
    store = MemoryStore()
    agent = Agent("shop", tools=list(_stock_tools(ran)), model=model)
    result = await Runner(store).run(agent, "How many Copper Saucepans are in stock?")
    assert result.ok and ran == ["find_product(Copper Saucepan)", "check_stock(CS-402)"]
    (refused,) = await _refusals(store, result.run_id)
    assert (refused.error_type, refused.needs) == ("WrongKind", ("check_stock",))
    assert refused.message == (
        "find_product was not run: name='CS-402' is the sku find_product gave, not a name. "
        "Call check_stock with sku='CS-402'."
    )


async def test_the_same_step_applied_to_its_own_result_again_is_refused_and_the_answer_is_next() -> None:
    model = ScriptedModel(
        [
            call("calculator", expression="77.19 / 0.92"),
            call("calculator", expression="83.9 / 0.92"),  # the same step on its own (rounded) result
            "It is 77.19 euros.",
        ]
    )
    store = MemoryStore()
    agent = Agent("calc", tools=[calculator], model=model)
    result = await Runner(store).run(agent, "Convert 77.19 by 0.92.")
    assert result.output == "It is 77.19 euros."
    (refused,) = await _refusals(store, result.run_id)
    assert (refused.kind, refused.error_type) == ("repeated", "SameStepAgain")
    assert refused.message == (
        "calculator was not run: expression='83.9 / 0.92' does to 83.9 (calculator's own last result) what "
        "'77.19 / 0.92' did to 77.19: the same step again, which goes round in circles. Use the results you "
        "have and answer the user now."
    )
    assert model.request_settings[2].tool_choice == "none"


async def test_a_new_step_on_a_tools_own_result_runs() -> None:
    model = ScriptedModel(
        [call("calculator", expression="2 * 37.9"), call("calculator", expression="75.8 * 0.79"), "59.88"]
    )
    result = await Runner(MemoryStore()).run(
        Agent("calc", tools=[calculator], model=model), "2 * 37.9 at 0.79?"
    )
    assert result.ok and result.output == "59.88"


async def test_a_description_in_a_lookups_own_name_is_sent_back_to_it_with_the_owners_name() -> None:
    @tool(idempotent=True)
    def find_employee(name: str) -> dict:
        """Find an employee by name."""
        return {"employee_id": "E-1017", "name": name, "manager_id": "E-1009"}

    model = ScriptedModel(
        [
            call("find_employee", name="Dana Whitfield's manager works in"),
            call("find_employee", name="Dana Whitfield"),
            "Her manager is E-1009.",
        ]
    )
    store = MemoryStore()
    agent = Agent("hr", tools=[find_employee], model=model)
    result = await Runner(store).run(agent, "Which department does Dana Whitfield's manager work in?")
    assert result.ok
    (refused,) = await _refusals(store, result.run_id)
    assert refused.needs == ("find_employee",)
    assert refused.message == (
        'find_employee was not run: name="Dana Whitfield\'s manager works in" describes a value instead of '
        "giving it. Find Dana Whitfield's manager first (call find_employee with 'Dana Whitfield'), then call "
        "find_employee with the name the results give."
    )


async def test_a_value_that_changes_a_word_of_the_request_is_sent_back_with_the_requests_word() -> None:
    read: list[str] = []

    @tool(idempotent=True)
    def read_file(path: str) -> str:
        """The text of a file."""
        read.append(path)
        return "Q3 revenue grew 4%."

    @tool(idempotent=True)
    def list_files(folder: str) -> list[str]:
        """The files in a folder."""
        return ["notes/q3_review.txt"]

    model = ScriptedModel(
        [
            call("read_file", path="file_notes/q3_review.txt"),
            call("read_file", path="notes/q3_review.txt"),
            "Q3 revenue grew 4%.",
        ]
    )
    store = MemoryStore()
    agent = Agent("files", tools=[read_file, list_files], model=model)
    result = await Runner(store).run(agent, "Summarise the file notes/q3_review.txt in one sentence.")
    assert result.ok and read == ["notes/q3_review.txt"]
    (refused,) = await _refusals(store, result.run_id)
    assert refused.needs == ("read_file",)
    assert refused.message == (
        "read_file was not run: path=file_notes/q3_review.txt does not appear in the user's request or in any "
        "tool result so far, so it would be a guess. The request gives path='notes/q3_review.txt'. Call "
        "read_file again with exactly that. Use only values from the request and earlier results."
    )


async def test_a_labelled_value_goes_first_to_the_read_that_also_gives_what_the_call_wanted() -> None:
    @tool(idempotent=True)
    def lookup_order(order_id: str) -> dict:
        """Read an order by its number."""
        return {"order_id": order_id}

    @tool(idempotent=True)
    def lookup_customer(customer_id: str) -> dict:
        """Read a customer."""
        return {"customer_id": customer_id, "name": "Maria Lopez"}

    @tool(idempotent=True)
    def search_orders_by_customer(customer_id: str) -> dict:
        """The order numbers of a customer."""
        return {"customer_id": customer_id, "order_ids": ["1042", "3120"]}

    model = ScriptedModel(
        [
            call("lookup_order", order_id="C-318"),
            call("search_orders_by_customer", customer_id="C-318"),
            "Orders 1042 and 3120.",
        ]
    )
    store = MemoryStore()
    agent = Agent("shop", tools=[lookup_order, lookup_customer, search_orders_by_customer], model=model)
    result = await Runner(store).run(agent, "List the order numbers placed by customer C-318.")
    assert result.ok
    (refused,) = await _refusals(store, result.run_id)
    assert refused.needs == ("search_orders_by_customer", "lookup_customer")
