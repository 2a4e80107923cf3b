"""Grounded final answers and look-before-you-act preconditions, in the loop."""

from __future__ import annotations

import pytest

from tether import Agent, Limits, Runner, tool
from tether.approvals import TierPolicy
from tether.exceptions import ConfigError
from tether.grounding import PARROTED, Evidence, LeftOut, left_out, ungrounded_in_answer, unusable_answer
from tether.journal import AnswerRejected, MemoryStore, ToolFailed
from tether.models import UserMessage
from tether.testing import ScriptedModel, call
from tether.tools import Seen

pytestmark = pytest.mark.anyio


@tool(idempotent=True)
def lookup_order(order_id: str) -> dict:
    """Read an order."""
    return {"order_id": order_id, "unit_price": 37.9, "quantity": 3}


@tool(run_in_thread=False)
def calculator(expression: str) -> float:
    """Arithmetic."""
    return round(eval(expression, {"__builtins__": {}}), 10)  # test helper: trusted input


@tool(reversible=False, requires=("lookup_order",))
def refund(order_id: str, amount: float) -> str:
    """Refund."""
    return "refunded"


def agent(script: list, **kw) -> Agent:
    return Agent("support", tools=[lookup_order, calculator, refund], model=ScriptedModel(script), **kw)


async def test_an_ungrounded_answer_is_sent_back_and_a_grounded_one_accepted() -> None:
    store = MemoryStore()
    a = agent(
        [
            "You will get $49.00 back.",
            call("lookup_order", order_id="1042"),
            call("calculator", expression="2 * 37.9"),
            "You will get $75.80 back.",
        ]
    )
    result = await Runner(store).run(a, "Return 2 kettles from order 1042: how much back?")
    assert result.ok and result.output == "You will get $75.80 back."
    rejected = [s.event for s in await store.load(result.run_id) if isinstance(s.event, AnswerRejected)]
    assert [r.values for r in rejected] == [("$49.00",)]
    # the next turn had to call one of the reads not yet made, and the message names them
    assert rejected[0].then == "tool" and rejected[0].needs == ("lookup_order", "calculator")
    told = a.model.requests[1][-1]  # type: ignore[attr-defined]
    assert isinstance(told, UserMessage) and "$49.00" in told.content
    assert "call lookup_order or calculator to get the real values" in told.content
    assert a.model.request_settings[1].allowed_tools == ("lookup_order", "calculator")  # type: ignore[attr-defined]


async def test_an_answer_that_stays_ungrounded_fails_the_run_instead_of_being_returned() -> None:
    store = MemoryStore()
    a = agent(["It is $49.00.", "Definitely $49.00.", "$49.00, final."], limits=Limits(max_answer_retries=2))
    result = await Runner(store).run(a, "how much for order 1042?")
    assert result.status == "failed" and result.output is None
    assert "no grounded answer after 3 tries" in result.reason and "$49.00" in result.reason


async def test_a_fake_transcript_is_never_an_answer() -> None:
    a = agent(['<tool_call>{"name": "refund"}</tool_call> <tool_response>done</tool_response>', "Done."])
    result = await Runner(MemoryStore()).run(a, "x")
    assert result.ok and result.output == "Done."


async def test_refund_before_lookup_is_refused_then_allowed() -> None:
    store = MemoryStore()
    a = agent(
        [
            call("refund", order_id="1042", amount=37.9),
            call("lookup_order", order_id="1042"),
            call("refund", order_id="1042", amount=37.9),
            "Refunded $37.90.",
        ]
    )
    result = await Runner(store).run(a, "refund one kettle (37.9) from order 1042")
    assert result.ok
    failed = [s.event for s in await store.load(result.run_id) if isinstance(s.event, ToolFailed)]
    assert [f.kind for f in failed] == ["precondition"]
    assert "needs a successful lookup_order call" in failed[0].message
    done = [s.event.tool for s in await store.load(result.run_id) if s.event.type == "tool_completed"]
    assert done == ["lookup_order", "refund"]


def test_requires_must_name_a_tool_of_the_agent() -> None:
    with pytest.raises(ConfigError, match=r"requires \['lookup_order'\], which the agent does not have"):
        Agent("a", tools=[refund], model=ScriptedModel(["x"]))


def test_answer_checks() -> None:
    ev = Evidence(["order 1042 costs 37.9 each", "75.8"])
    assert ungrounded_in_answer("$75.80 for order 1042, SKU KET-01", ev) == []
    assert ungrounded_in_answer("$75.80, or $80 with shipping in 3-5 days", ev) == ["$80", "3", "5"]
    assert unusable_answer("   ") == "the answer is empty"
    assert unusable_answer('{"name": "refund", "arguments": {}}') is not None
    assert unusable_answer("All good.") is None
    # the runtime's own corrective messages copied back are not answers; a tool's error copied back is
    # what the tool said, and stays an answer
    assert unusable_answer("Error: lookup_order was already called with these arguments") == PARROTED
    assert unusable_answer("Your answer was not shown to the user: the answer is empty.") == PARROTED
    # the corrective message told back as the answer, in the model's own words
    assert unusable_answer('The answer is a tool call: lookup_order(order_id="4410")') == PARROTED
    assert unusable_answer("refund was not run: amount=12.0 does not appear") == PARROTED
    assert unusable_answer("Error: LookupError: there is no order '9999'.") is None


async def test_a_truncated_answer_is_never_final() -> None:
    from tether.models import ModelResponse

    cut = ModelResponse(text="To calculate the refund we first", finish_reason="length")
    a = agent([cut, "Nothing to refund."], grounding=False)
    result = await Runner(MemoryStore()).run(a, "x")
    assert result.ok and result.output == "Nothing to refund."


async def test_without_grounding_numbers_are_not_checked_but_transcripts_still_are() -> None:
    a = agent(['{"name": "refund", "arguments": {}}', "It is $49.00."], grounding=False)
    result = await Runner(MemoryStore()).run(a, "x")
    assert result.ok and result.output == "It is $49.00."


def test_recipes_quoting_the_tool_name_or_opening_with_the_steps_are_recognised() -> None:
    from tether.grounding import HOW_TO, describes_steps

    quoted = 'To give her a raise, call the "update_salary" function with employee_id "E-1021".'
    assert unusable_answer(quoted, ["update_salary"]) == HOW_TO
    assert describes_steps(quoted)
    assert describes_steps("To refund the blender, you need to first look up the order details.")
    assert not describes_steps("To summarise: revenue grew 12%.")
    assert not describes_steps("The refund is $75.80.")
    # the steps carried to their result: an answer that shows its working (the 1.5B model's, rejected
    # once as a recipe, after which it wrote recipes until the retries ran out)
    assert not describes_steps(
        "To calculate the refund amount, you need to know the unit price of the kettles and the quantity. "
        "The unit price is 37.9, and the quantity is 2. So, the calculation would be 37.9 * 2 = 75.8."
    )


# -- a tool's own precondition (`check=`) ------------------------------------------------------------


def _stock_tools(reserved: list[tuple[str, int]]):
    @tool(idempotent=True)
    def check_stock(sku: str) -> dict:
        """Units in stock per warehouse."""
        return {"sku": sku.upper(), "units_by_warehouse": {"Leeds": 2, "York": 5}}

    def enough_in_stock(arguments: dict, seen: Seen) -> str | None:
        for lookup in seen.results("check_stock", sku=arguments["sku"]):
            units = lookup.result["units_by_warehouse"].get(arguments["warehouse"])
            if units is not None and arguments["quantity"] > units:
                return f"{arguments['warehouse']} has only {units} units of {arguments['sku']}"
        return None

    @tool(risk="medium", requires=("check_stock",), check=enough_in_stock)
    def reserve_stock(sku: str, quantity: int, warehouse: str) -> str:
        """Reserve units in one warehouse (the stock system takes back-orders)."""
        reserved.append((warehouse, quantity))
        return f"reserved {quantity}"

    return check_stock, reserve_stock


async def test_a_tools_own_check_refuses_a_call_before_it_runs_and_tells_the_model_why() -> None:
    reserved: list[tuple[str, int]] = []
    model = ScriptedModel(
        [
            call("check_stock", sku="cs-402"),
            call("reserve_stock", sku="CS-402", quantity=5, warehouse="Leeds"),  # past the 2 in Leeds
            call("reserve_stock", sku="CS-402", quantity=2, warehouse="Leeds"),
            "Reserved the 2 in Leeds; Leeds had only 2.",
        ]
    )
    store = MemoryStore()
    a = Agent("stock", tools=list(_stock_tools(reserved)), model=model, policy=None)
    result = await Runner(store).run(
        a, "Reserve 5 Copper Saucepans (CS-402) in Leeds, or as many as there are."
    )
    assert result.ok and reserved == [("Leeds", 2)]
    (refused,) = [s.event for s in await store.load(result.run_id) if isinstance(s.event, ToolFailed)]
    assert (refused.kind, refused.error_type) == ("precondition", "CheckFailed")
    assert refused.message == (
        "Leeds has only 2 units of CS-402, so reserve_stock was not run and nothing was changed. Tell the user that."
    )
    # what the model was told is what the journal says, and a resumed run sees the same
    assert any("Leeds has only 2 units of CS-402" in str(m.content) for m in model.requests[2])


async def test_a_check_that_raises_refuses_the_call() -> None:
    ran: list[str] = []

    def broken(arguments: dict, seen: Seen) -> str | None:
        raise KeyError("units")

    @tool(risk="medium", check=broken)
    def reserve(sku: str) -> str:
        """Reserve."""
        ran.append(sku)
        return "ok"

    store = MemoryStore()
    a = Agent("stock", tools=[reserve], model=ScriptedModel([call("reserve", sku="CS-402"), "Could not."]))
    result = await Runner(store).run(a, "Reserve CS-402.")
    assert result.ok and ran == []
    (refused,) = [s.event for s in await store.load(result.run_id) if isinstance(s.event, ToolFailed)]
    assert "Its precondition could not be checked (KeyError: 'units')" in refused.message


def test_a_check_must_be_a_function() -> None:
    with pytest.raises(ConfigError, match="check must be a function"):
        tool(check="enough_in_stock")(lambda sku: sku)  # type: ignore[arg-type]


# -- a write on a thing its lookup does not show ---------------------------------------------------


@tool(idempotent=True)
def lookup_order_4410(order_id: str) -> dict:
    """Read an order."""
    return {"order_id": "4410", "items": [{"name": "Two-Slice Toaster", "unit_price": 49.0, "quantity": 1}]}


@pytest.mark.parametrize(
    ("request_text", "refunded"),
    [
        ("Refund the blender from order 4410.", []),  # the order has no blender
        ("Refund the toasters from order 4410.", [49.0]),  # it has one (plural, other case)
        ("Refund 49 dollars on order 4410.", [49.0]),  # names no thing: nothing to compare
        ("Refund the price of the toaster on order 4410.", [49.0]),  # `unit_price` mentions a price
    ],
)
async def test_a_write_on_a_thing_its_lookup_does_not_show_is_refused_with_the_answer_to_give(
    request_text: str, refunded: list[float]
) -> None:
    done: list[float] = []

    @tool(risk="high", reversible=False, requires=("lookup_order_4410",))
    def refund(order_id: str, amount: float) -> str:
        """Refund an amount on an order."""
        done.append(amount)
        return "refunded"

    model = ScriptedModel(
        [
            call("lookup_order_4410", order_id="4410"),
            call("refund", order_id="4410", amount=49.0),
            # the answer that fits what happened (one that leaves out the price asked about goes back)
            "Refunded 49.00 on order 4410."
            if refunded
            else "Order 4410 has no blender, so nothing was refunded.",
        ]
    )
    store = MemoryStore()
    every_tier_runs = TierPolicy(
        tiers={"medium": "run", "high": "run", "critical": "run"}, confidence_floor=0.0
    )
    a = Agent("support", tools=[lookup_order_4410, refund], model=model, policy=every_tier_runs)
    result = await Runner(store).run(a, request_text)
    assert result.ok and done == refunded
    failed = [s.event for s in await store.load(result.run_id) if isinstance(s.event, ToolFailed)]
    if refunded:
        assert failed == []
        return
    (refused,) = failed
    assert refused.error_type == "RecordMissing"
    assert refused.message == (
        "refund was not run, and nothing was changed: the request is about the blender, and no "
        "lookup_order_4410 result mentions a blender. Tell the user there is no blender there."
    )
    assert model.request_settings[2].tool_choice == "none"  # the answer is next


async def test_a_recipe_for_a_write_its_check_would_refuse_gets_the_refusal_as_the_answer_to_give() -> None:
    reserved: list[tuple[str, int]] = []
    recipe = (
        "To reserve 5 Copper Saucepans in the Leeds warehouse, call the `reserve_stock` function with the "
        'arguments `{"sku": "CS-402", "quantity": 5, "warehouse": "Leeds"}`.'
    )
    model = ScriptedModel(
        [call("check_stock", sku="CS-402"), recipe, "Leeds has only 2, so nothing was reserved."]
    )
    store = MemoryStore()
    a = Agent("stock", tools=list(_stock_tools(reserved)), model=model)
    result = await Runner(store).run(a, "Reserve 5 Copper Saucepans (CS-402) in the Leeds warehouse.")
    assert result.ok and reserved == []  # the write spelled out is never made
    (told,) = [s.event for s in await store.load(result.run_id) if isinstance(s.event, AnswerRejected)]
    assert told.then == "answer"
    assert told.message == (
        "Leeds has only 2 units of CS-402, so reserve_stock was not run and nothing was changed. Tell the user that."
    )


ORDER = {"order_id": "7702", "customer_id": "C-442", "total": 42.0}
CUSTOMER = {"customer_id": "C-442", "name": "James Chen", "email": "j.chen@example.org"}
EMAIL_QUESTION = "Which email address should I use for the customer who placed order 7702?"


def test_an_answer_without_the_field_the_request_names_leaves_it_out() -> None:
    results = [("lookup_order", ORDER), ("lookup_customer", CUSTOMER)]
    left = left_out(EMAIL_QUESTION, results, "James Chen")
    # the email, not the customer's id the request's "customer" also names: the field before the pointer
    assert left == LeftOut(field="email", value="j.chen@example.org", tool="lookup_customer")
    assert left_out(EMAIL_QUESTION, results, "Write to J.Chen@example.org.") is None


def test_one_asked_field_stated_is_enough_and_what_the_request_holds_is_not_asked_for() -> None:
    results = [("lookup_order", ORDER), ("lookup_customer", CUSTOMER)]
    assert (
        left_out(EMAIL_QUESTION, results, "It is j.chen@example.org") is None
    )  # customer_id need not be said
    # the order's id is in the request: it is what the user asked about
    assert left_out("What is the total of order 7702?", [("lookup_order", ORDER)], "It is $42.00.") is None
    assert left_out(
        "What is the total of order 7702?", [("lookup_order", ORDER)], "Order 7702 exists."
    ) == LeftOut(field="total", value="42.0", tool="lookup_order")


def test_a_where_question_asks_for_the_location_and_plural_words_name_singular_fields() -> None:
    shipment = {"tracking_id": "TRK-88213", "status": "in transit", "location": "Memphis hub"}
    where = "Where is shipment TRK-88213 right now?"
    assert left_out(where, [("get_shipment_status", shipment)], "It is in transit.") == LeftOut(
        field="location", value="Memphis hub", tool="get_shipment_status"
    )
    assert left_out(where, [("get_shipment_status", shipment)], "It is at the Memphis hub.") is None
    reserved = {"sku": "BB-310", "reserved": 3, "units_left": 9}
    asked = "Reserve 3 boards in Leeds, then tell me how many are left there."
    assert left_out(asked, [("reserve_stock", reserved)], "Reserved; 3 units left.") == LeftOut(
        field="units_left", value="9", tool="reserve_stock"
    )
    assert left_out(asked, [("reserve_stock", reserved)], "Reserved 3; 9 are left.") is None


def test_the_amount_in_the_currency_the_request_asks_for_is_asked_for() -> None:
    results = [
        ("lookup_order", {"order_id": "5531", "currency": "USD", "total": 83.9}),
        ("convert_currency", {"amount": 77.19, "currency": "EUR", "rate": 0.92}),
    ]
    asked = "How much is order 5531 in euros?"
    # converted back with a calculator: the euros went into a later call, and are still what was asked
    assert left_out(asked, results, "83.9022", used=['{"expression": "77.19 / 0.92"}']) == LeftOut(
        field="amount", value="77.19", tool="convert_currency"
    )
    assert left_out(asked, results, "It is 77.19 euros.") is None
    # a currency named as the amount's own, not one it is wanted in, asks for nothing
    assert left_out("Refund 83.9 dollars on order 5531.", results, "Done.") is None


def test_a_question_about_all_of_something_asks_for_the_total() -> None:
    stock = {"sku": "CP-118", "units_by_warehouse": {"Leeds": 3, "Lyon": 4}, "total_units": 7}
    asked = "How many Ceramic Pour-Over Sets do we have in stock across all warehouses?"
    assert left_out(asked, [("check_stock", stock)], "There are 3 in stock.") == LeftOut(
        field="total_units", value="7", tool="check_stock"
    )
    assert left_out(asked, [("check_stock", stock)], "7 sets: 3 in Leeds and 4 in Lyon.") is None
