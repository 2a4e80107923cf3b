"""Answers that computed a number are not sent back for it; answers that stop at an id are, once."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tether import Agent, Limits, Runner, tool
from tether.grounding import Evidence, answer_numbers, references
from tether.grounding._arithmetic import derive
from tether.journal import AnswerRejected, MemoryStore, RunFinished
from tether.testing import ScriptedModel, call

pytestmark = pytest.mark.anyio


@tool(idempotent=True)
def lookup_order(order_id: str) -> dict:
    """Look up an order by its number: customer id, items, total."""
    if order_id != "7702":
        raise LookupError(f"there is no order {order_id!r}")
    return {"order_id": "7702", "customer_id": "C-442", "unit_price": 37.9, "quantity": 3, "total": 113.7}


@tool(idempotent=True)
def lookup_customer(customer_id: str) -> dict:
    """Look up a customer by customer id (C-...): name and email."""
    return {"customer_id": customer_id, "name": "James Chen", "email": "j.chen@example.org"}


@tool(idempotent=True)
def lookup_supplier(supplier_id: str) -> dict:
    """Look up a supplier by supplier id (S-...)."""
    return {"supplier_id": supplier_id}


@tool(idempotent=True)
def find_employee(name: str) -> dict:
    """Find an employee by full name."""
    return {"employee_id": "E-1017", "name": name, "manager_id": "E-1009"}


@tool(idempotent=True)
def get_employee(employee_id: str) -> dict:
    """Look up an employee by employee id (E- and digits)."""
    return {"employee_id": employee_id, "name": "Grace Okafor", "manager_id": None}


async def _rejections(store: MemoryStore, run_id: str) -> list[AnswerRejected]:
    return [s.event for s in await store.load(run_id) if isinstance(s.event, AnswerRejected)]


# -- numbers an answer computed ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "known", "how"),
    [
        ("75.8", ["2", "37.9"], "75.8 = 2 × 37.9"),
        ("90200", ["82000", "0.1"], "90200 = 82000 × (1 + 0.1)"),
        ("19504.8", ["129", "151.2"], "19504.8 = 129 × 151.2"),
        ("29.94", ["37.9", "0.79"], "29.94 = 0.79 × 37.9"),  # to the cent: 29.941
        ("49", ["83.9", "34.9"], "49 = 83.9 − 34.9"),
        ("19505", ["129", "151.2"], "19505 ≈ 129 × 151.2"),  # rounded to the unit
    ],
)
def test_one_step_of_arithmetic_on_seen_numbers_is_derived(value: str, known: list[str], how: str) -> None:
    assert derive(Decimal(value), [Decimal(k) for k in known]) == how


@pytest.mark.parametrize(
    ("value", "known"),
    [
        ("7", ["3", "4", "12"]),  # a small whole number from two whole numbers: too easy by chance
        ("164000", ["82000"]),  # the same number twice is not a computation
        ("75.81", ["2", "37.9"]),  # off by a cent
        ("19506", ["129", "151.2"]),  # off by more than rounding
        ("100", ["0", "1", "100.5"]),  # 0 and 1 are no operands
        ("2", ["1", "1"]),
    ],
)
def test_what_is_not_derived(value: str, known: list[str]) -> None:
    assert derive(Decimal(value), [Decimal(k) for k in known]) is None


def test_an_answer_states_which_numbers_it_computed_and_which_it_made_up() -> None:
    seen = Evidence(["returning 2 of the 3 kettles", '{"unit_price": 37.9}'])
    checked = answer_numbers("They get $75.80 back, or $80 with shipping.", seen)
    assert checked.derived == ("75.8 = 2 × 37.9",)
    assert checked.ungrounded == ("$80",)
    strict = answer_numbers("They get $75.80 back.", seen, arithmetic=False)
    assert strict.ungrounded == ("$75.80",) and strict.derived == ()


async def test_a_computed_answer_is_returned_and_the_journal_says_how_it_was_checked() -> None:
    model = ScriptedModel([call("lookup_order", order_id="7702"), "They should get $75.80 back."])
    store = MemoryStore()
    result = await Runner(store).run(
        Agent("a", tools=[lookup_order], model=model), "2 of the 3 items of order 7702 come back: how much?"
    )
    assert result.ok and result.output == "They should get $75.80 back."
    assert await _rejections(store, result.run_id) == []
    (finished,) = [s.event for s in await store.load(result.run_id) if isinstance(s.event, RunFinished)]
    assert "computed: 75.8 = 2 × 37.9" in finished.reason


async def test_a_number_off_by_more_than_rounding_is_still_sent_back() -> None:
    model = ScriptedModel(
        [call("lookup_order", order_id="7702"), "They should get $75.00 back.", "They get $75.80 back."]
    )
    store = MemoryStore()
    result = await Runner(store).run(
        Agent("a", tools=[lookup_order], model=model), "2 of the 3 items of order 7702 come back: how much?"
    )
    assert result.output == "They get $75.80 back."
    (rejected,) = await _rejections(store, result.run_id)
    assert rejected.values == ("$75.00",)


# -- answers that stop one lookup short --------------------------------------------------------------


def test_references_are_the_id_fields_of_a_json_result() -> None:
    result = '{"order_id": "7702", "customer_id": "C-442", "items": [{"sku": "KT-220", "name": "Kettle"}]}'
    assert list(references(result)) == [("order_id", "7702"), ("customer_id", "C-442"), ("sku", "KT-220")]
    assert list(references("Order 7702 belongs to C-442")) == []  # not JSON: no fields to go by


async def test_an_answer_that_hands_over_an_id_is_sent_to_the_lookup_that_resolves_it() -> None:
    model = ScriptedModel(
        [
            call("lookup_order", order_id="7702"),
            "Use the email of customer C-442.",
            call("lookup_customer", customer_id="C-442"),
            "Write to j.chen@example.org.",
        ]
    )
    store = MemoryStore()
    agent = Agent("a", tools=[lookup_order, lookup_customer, lookup_supplier], model=model)
    result = await Runner(store).run(agent, "Which email should I use for the customer of order 7702?")
    assert result.ok and result.output == "Write to j.chen@example.org."
    (rejected,) = await _rejections(store, result.run_id)
    assert rejected.reason.endswith("(C-442)") and rejected.needs == ("lookup_customer",)
    assert "Call lookup_customer with customer_id='C-442'" in rejected.message
    # the next call is limited to that lookup by constrained decoding
    assert model.request_settings[2].allowed_tools == ("lookup_customer",)


async def test_an_id_field_is_matched_to_a_tool_by_the_prefix_its_description_shows() -> None:
    model = ScriptedModel(
        [
            call("find_employee", name="Dana Whitfield"),
            "Dana Whitfield's manager is E-1009.",
            call("get_employee", employee_id="E-1009"),
            "Grace Okafor.",
        ]
    )
    store = MemoryStore()
    result = await Runner(store).run(
        Agent("a", tools=[find_employee, get_employee], model=model), "Who is Dana Whitfield's manager?"
    )
    assert result.output == "Grace Okafor."
    (rejected,) = await _rejections(store, result.run_id)
    assert rejected.needs == ("get_employee",)  # manager_id -> employee_id, by "E-" in its description


@pytest.mark.parametrize(
    ("request_text", "answer"),
    [
        ("What is the status of order 7702?", "Order 7702 is delivered."),  # the id came from the user
        ("Who placed order 7702?", "Customer C-442, James Chen."),  # already looked up
    ],
)
async def test_ids_the_user_gave_or_the_run_looked_up_are_answers(request_text: str, answer: str) -> None:
    script = [call("lookup_order", order_id="7702")]
    if "C-442" in answer:
        script.append(call("lookup_customer", customer_id="C-442"))
    model = ScriptedModel([*script, answer])
    store = MemoryStore()
    agent = Agent("a", tools=[lookup_order, lookup_customer], model=model)
    result = await Runner(store).run(agent, request_text)
    assert result.ok and result.output == answer
    assert await _rejections(store, result.run_id) == []


async def test_an_id_answer_is_sent_back_once_then_stands() -> None:
    model = ScriptedModel(
        [
            call("lookup_order", order_id="7702"),
            "The customer is C-442.",
            call("lookup_supplier", supplier_id="C-442"),  # the model does not follow the correction
            "The customer is C-442.",
        ]
    )
    store = MemoryStore()
    agent = Agent("a", tools=[lookup_order, lookup_customer, lookup_supplier], model=model)
    result = await Runner(store).run(agent, "Who placed order 7702?")
    assert result.ok and result.output == "The customer is C-442."
    assert len(await _rejections(store, result.run_id)) == 1


async def test_the_reference_rule_resumes_as_it_ran() -> None:
    model = ScriptedModel(
        [
            call("lookup_order", order_id="7702"),
            "Customer C-442.",
            call("lookup_customer", customer_id="C-442"),
        ]
    )
    store = MemoryStore()
    agent = Agent("a", tools=[lookup_order, lookup_customer], model=model)
    first = await Runner(store).run(agent, "Who placed order 7702?")
    assert first.status == "failed"  # the script ran out after the lookup: the run stops there
    # a rebuilt run knows the answer was already sent back once for a reference: it does not send it again
    from tether.journal import Event
    from tether.runtime._loop import _State

    events: list[Event] = [s.event for s in await store.load(first.run_id)]
    state = _State.rebuild(first.run_id, events)
    assert state.reasons and state.reasons[0].startswith("the answer stops at a record's id")


# -- answers that leave out the quantity asked for ---------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "sent_back"),
    [
        ("The kettles were refunded to the customer.", True),
        ("They get $75.80 back.", False),
        ("Nothing: the order has no kettles.", False),  # a word for none is a quantity
        ("There is no such order.", False),  # says what is missing
    ],
)
async def test_a_how_much_question_answered_without_a_number_is_sent_back_once(
    answer: str, sent_back: bool
) -> None:
    model = ScriptedModel([call("lookup_order", order_id="7702"), answer, "They get $75.80 back."])
    store = MemoryStore()
    result = await Runner(store).run(
        Agent("a", tools=[lookup_order], model=model),
        "2 items of order 7702 come back: how much do they get?",
    )
    rejected = await _rejections(store, result.run_id)
    assert bool(rejected) is sent_back
    if sent_back:
        assert rejected[0].reason == "the user asked how much or how many, and the answer states no number"
        assert (
            'request "2 items of order 7702 come back: how much do they get?" asks for one'
            in rejected[0].message
        )
        assert result.output == "They get $75.80 back."
    else:
        assert result.output == answer


# -- steps told to the user --------------------------------------------------------------------------


async def test_steps_told_to_the_user_are_sent_back_once_and_a_pending_write_is_not_let_run() -> None:
    @tool(risk="high", reversible=False, requires=("lookup_order",))
    def refund(order_id: str, amount: float) -> str:
        """Refund an amount on an order."""
        raise AssertionError("the refund must not run")

    steps = "To refund the blender from order 7702, you need to first look up the order details."
    model = ScriptedModel([call("lookup_order", order_id="7702"), steps, "Order 7702 has no blender."])
    store = MemoryStore()
    agent = Agent("a", tools=[lookup_order, refund], model=model)
    result = await Runner(store).run(agent, "Refund the blender from order 7702.")
    assert result.ok and result.output == "Order 7702 has no blender."
    (rejected,) = await _rejections(store, result.run_id)
    assert rejected.reason.startswith("the answer tells the user how to call the tools")
    # the refund the user asked for has not run: the next turn is an answer, not a free choice
    assert rejected.then == "answer" and model.request_settings[2].tool_choice == "none"


async def test_a_policy_answer_that_reads_like_steps_stands_the_second_time() -> None:
    policy = "To get a refund, you need to return the item unused."
    model = ScriptedModel([call("lookup_order", order_id="7702"), policy, policy])
    store = MemoryStore()
    result = await Runner(store).run(
        Agent("a", tools=[lookup_order], model=model), "Order 7702: refund policy?"
    )
    assert result.ok and result.output == policy
    assert len(await _rejections(store, result.run_id)) == 1


async def test_an_answer_sent_back_only_for_its_quality_does_not_use_up_the_retries() -> None:
    model = ScriptedModel(
        [
            call("lookup_order", order_id="7702"),
            "It is $99.",  # ungrounded: sent back (1 of 1 retries)
            "Use the email of customer C-442.",  # a reference, at the last try: sent back all the same
            call("lookup_customer", customer_id="C-442"),
            "The customer's email is j.chen@example.org.",
        ]
    )
    store = MemoryStore()
    agent = Agent(
        "a", tools=[lookup_order, lookup_customer], model=model, limits=Limits(max_answer_retries=1)
    )
    result = await Runner(store).run(agent, "Which email should I use for the customer of order 7702?")
    assert result.ok and result.output == "The customer's email is j.chen@example.org."
    rejected = await _rejections(store, result.run_id)
    assert [(r.values, r.soft) for r in rejected] == [(("$99",), False), ((), True)]


async def test_when_the_answer_after_a_quality_send_back_is_untrue_the_earlier_answer_stands() -> None:
    model = ScriptedModel(
        [
            call("lookup_order", order_id="7702"),
            "It is $99.",  # ungrounded: sent back (1 of 1 retries)
            "Use the email of customer C-442.",  # a reference: sent back for its quality
            call("lookup_customer", customer_id="C-442"),
            "Write to jc@example.com, the customer since 2019.",  # 2019 is made up: retries used up
        ]
    )
    store = MemoryStore()
    agent = Agent(
        "a", tools=[lookup_order, lookup_customer], model=model, limits=Limits(max_answer_retries=1)
    )
    result = await Runner(store).run(agent, "Which email should I use for the customer of order 7702?")
    # never the ungrounded one, and not `failed` either: the grounded answer sent back to be better
    assert result.ok and result.output == "Use the email of customer C-442."
    assert "an earlier answer, since the last was rejected: the answer states 2019" in result.reason


async def test_a_wrong_number_after_the_tools_answered_is_sent_back_to_their_values() -> None:
    model = ScriptedModel(
        [call("lookup_order", order_id="7702"), "The total is $71.07.", "The total is $113.70."]
    )
    store = MemoryStore()
    agent = Agent("a", tools=[lookup_order, lookup_customer], model=model)
    result = await Runner(store).run(agent, "What is the total of order 7702?")
    assert result.output == "The total is $113.70."
    (rejected,) = await _rejections(store, result.run_id)
    # the values are in view: no call is forced (a calculator would compute on the wrong numbers)
    assert rejected.then == "either" and rejected.needs == ()
    assert "exactly as the tool results above give them" in rejected.message


# -- answers that leave out what was asked ---------------------------------------------------------------


async def test_an_answer_that_leaves_out_the_field_asked_for_is_sent_back_once_with_its_value() -> None:
    model = ScriptedModel(
        [
            call("lookup_order", order_id="7702"),
            call("lookup_customer", customer_id="C-442"),
            "James Chen",  # grounded, and not the email the user asked for
            "Write to j.chen@example.org.",
        ]
    )
    store = MemoryStore()
    agent = Agent("a", tools=[lookup_order, lookup_customer], model=model)
    result = await Runner(store).run(
        agent, "Which email address should I use for the customer of order 7702?"
    )
    assert result.output == "Write to j.chen@example.org."
    (rejected,) = await _rejections(store, result.run_id)
    assert rejected.soft and rejected.reason == "the answer leaves out what the request asks for (email)"
    assert rejected.message == (
        "Your answer was not shown to the user: the user's request \"Which email address should I use for the "
        'customer of order 7702?" asks for the email, and the answer does not give it; lookup_customer gives '
        "email 'j.chen@example.org'. Then answer with it, in plain sentences."
    )


async def test_an_answer_that_leaves_out_a_pointer_asked_for_is_sent_to_the_record_it_points_at() -> None:
    model = ScriptedModel(
        [
            call("find_employee", name="Dana Whitfield"),
            "Dana Whitfield's manager is Dana Whitfield.",
            call("get_employee", employee_id="E-1009"),
            "Grace Okafor.",  # states what E-1009 points at: the pointer itself need not be said
        ]
    )
    store = MemoryStore()
    result = await Runner(store).run(
        Agent("a", tools=[find_employee, get_employee], model=model), "Who is Dana Whitfield's manager?"
    )
    assert result.output == "Grace Okafor."
    (rejected,) = await _rejections(store, result.run_id)
    assert (rejected.then, rejected.needs) == ("tool", ("get_employee",))
    assert "Then call get_employee with employee_id='E-1009'" in rejected.message
    assert model.request_settings[2].allowed_tools == ("get_employee",)


async def test_a_number_asked_for_that_went_into_a_later_call_is_not_asked_for_again() -> None:
    model = ScriptedModel(
        [call("lookup_order", order_id="7702"), call("calculator", expression="2 * 113.7"), "227.4"]
    )

    @tool(idempotent=True)
    def calculator(expression: str) -> float:
        """Arithmetic."""
        return 227.4

    store = MemoryStore()
    agent = Agent("a", tools=[lookup_order, calculator], model=model)
    result = await Runner(store).run(agent, "What is 2 times the total of order 7702?")
    assert result.output == "227.4" and await _rejections(store, result.run_id) == []
