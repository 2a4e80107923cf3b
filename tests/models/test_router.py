"""The router: tiers by complexity, hints, classifier, budget, A/B splits, escalation, and the journal."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from tether import Agent, Runner
from tether.exceptions import ConfigError, ModelServerError, ModelTimeout
from tether.governance import ModelPrice, PriceTable
from tether.journal import MemoryStore, ModelResponded
from tether.models import (
    Message,
    Model,
    ModelResponse,
    ModelSettings,
    Route,
    Router,
    Split,
    TokenCallback,
    ToolCall,
    ToolDefinition,
    Usage,
    UserMessage,
    estimate_complexity,
    load_models,
)
from tether.testing import ScriptedModel, call

pytestmark = pytest.mark.anyio

SIMPLE = "What is the capital of France?"
HARD = (
    "First explain why merge sort runs in O(n log n), then compare it with quicksort on 3 inputs of "
    "10, 1000 and 1000000 items, and finally design a plan to benchmark both. Which is faster? Why?"
)
MEDIUM = "Why does this function return None?\n```python\ndef f(x):\n    x + 1\n```"


def user(text: str) -> list[Message]:
    return [UserMessage(content=text)]


def scripted(name: str, replies: Sequence[object] | None = None) -> ScriptedModel:
    return ScriptedModel(list(replies) if replies is not None else [f"answer from {name}"] * 50, name=name)


def three_tiers() -> Router:
    return Router(
        fast=scripted("local:fast"),
        standard=scripted("local:standard"),
        reasoning=scripted("remote:reasoning"),
    )


class SettingsRecorder(Model):
    """Answers like a ScriptedModel and records the settings of each call."""

    def __init__(self, name: str, replies: Sequence[object]):
        self.inner = ScriptedModel(list(replies), name=name)
        self.settings: list[ModelSettings] = []

    @property
    def name(self) -> str:
        return self.inner.name

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings = ModelSettings(),  # noqa: B008 - frozen dataclass
        on_token: TokenCallback | None = None,
    ) -> ModelResponse:
        self.settings.append(settings)
        return await self.inner.request(messages, tools=tools, settings=settings, on_token=on_token)


# -- complexity ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signal", "addition"),
    [
        ("steps", " First look it up, then check it, and finally summarise it."),
        ("reasoning", " Explain why, and compare the two."),
        ("code", "\n```python\nreturn x\n```"),
        ("numbers", " Use 12, 40, 7 and 3."),
        ("questions", " Is it big? Is it old? Is it far?"),
        ("length", " and the river" * 60),
    ],
)
def test_each_signal_raises_the_complexity_estimate(signal: str, addition: str) -> None:
    base = estimate_complexity(user(SIMPLE))
    more = estimate_complexity(user(SIMPLE + addition))
    assert more.signals[signal] > base.signals[signal]
    assert more.score > base.score


def test_more_tools_raise_the_complexity_estimate() -> None:
    tools = [ToolDefinition(name=f"t{i}", parameters={"type": "object"}) for i in range(6)]
    assert estimate_complexity(user(SIMPLE), tools).score > estimate_complexity(user(SIMPLE)).score


def test_simple_medium_and_hard_requests_go_to_their_tiers() -> None:
    router = three_tiers()
    routes = [router.route(user(text)) for text in (SIMPLE, MEDIUM, HARD)]
    assert [r.tier for r in routes] == ["fast", "standard", "reasoning"]
    assert [r.model for r in routes] == ["local:fast", "local:standard", "remote:reasoning"]
    assert routes[0].complexity < routes[1].complexity < routes[2].complexity
    # the reason names the estimate and the signals behind it
    assert (
        "complexity" in routes[2].reason and "reasoning" in routes[2].reason and "steps" in routes[2].reason
    )


def test_the_estimate_reads_the_last_user_message_not_old_turns() -> None:
    messages = [*user(HARD), UserMessage(content="thanks, and what is 2 + 2?")]
    assert three_tiers().route(messages).tier == "fast"


# -- hints, missing tiers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hints", "text", "tier"),
    [
        (("reasoning",), SIMPLE, "reasoning"),
        (("latency_critical",), HARD, "fast"),
        (("tier:standard",), HARD, "standard"),
        (("tier:fast", "reasoning"), HARD, "fast"),  # an exact tier wins over a kind of need
    ],
)
def test_hints_override_the_estimate(hints: tuple[str, ...], text: str, tier: str) -> None:
    route = three_tiers().route(user(text), settings=ModelSettings(hints=hints))
    assert route.tier == tier
    assert route.reason.startswith("hint ")


def test_an_unknown_hint_is_a_config_error_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown routing hints \['fastest'\].*latency_critical"):
        three_tiers().route(user(SIMPLE), settings=ModelSettings(hints=("fastest",)))


def test_a_missing_tier_falls_to_the_nearest_configured_one_upwards_first() -> None:
    router = Router(standard=scripted("local:standard"))
    assert router.route(user(SIMPLE)).tier == "standard"
    route = router.route(user(HARD))
    assert route.tier == "standard"
    assert "no model in tier reasoning: standard" in route.reason
    assert Router(fast=scripted("local:fast")).route(user(HARD)).model == "local:fast"


def test_a_router_with_no_tier_or_bad_thresholds_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least one tier"):
        Router()
    with pytest.raises(ConfigError, match="thresholds"):
        Router(fast=scripted("local:fast"), thresholds=(0.6, 0.2))


# -- budget ------------------------------------------------------------------------------------------

PRICES = {"remote:reasoning": (10.0, 30.0), "remote:standard": (1.0, 2.0)}


def priced_router(**kwargs: object) -> Router:
    return Router(
        fast=scripted("local:fast"),
        standard=scripted("remote:standard"),
        reasoning=scripted("remote:reasoning"),
        prices=PRICES,
        **kwargs,  # type: ignore[arg-type]
    )


def test_estimated_cost_is_the_prompt_plus_max_tokens_at_the_models_price() -> None:
    route = priced_router().route(user(HARD), settings=ModelSettings(max_tokens=1000))
    assert route.tier == "reasoning"
    prompt_tokens = len(HARD) // 4 + 4
    assert route.estimated_cost_usd == pytest.approx((prompt_tokens * 10.0 + 1000 * 30.0) / 1e6)


def test_a_budget_below_the_estimate_moves_down_a_tier_and_says_why() -> None:
    settings = ModelSettings(max_tokens=1000, budget_usd=0.01)  # reasoning ~$0.03, standard ~$0.002
    route = priced_router().route(user(HARD), settings=settings)
    assert route.tier == "standard" and route.model == "remote:standard"
    assert "over the $0.01 budget: down to standard" in route.reason
    assert route.estimated_cost_usd is not None and route.estimated_cost_usd <= 0.01


def test_a_tiny_budget_goes_down_to_the_free_local_tier() -> None:
    route = priced_router().route(user(HARD), settings=ModelSettings(max_tokens=1000, budget_usd=0.0001))
    assert (route.tier, route.estimated_cost_usd) == ("fast", 0.0)


def test_a_budget_that_fits_changes_nothing() -> None:
    route = priced_router().route(user(HARD), settings=ModelSettings(max_tokens=1000, budget_usd=1.0))
    assert route.tier == "reasoning" and "budget" not in route.reason


def test_over_budget_even_on_the_lowest_tier_is_said() -> None:
    router = Router(standard=scripted("remote:standard"), prices=PRICES)
    route = router.route(user(HARD), settings=ModelSettings(max_tokens=1000, budget_usd=1e-9))
    assert route.tier == "standard" and "even on standard" in route.reason


def test_a_governance_price_table_prices_the_routes() -> None:
    table = PriceTable(prices={"remote:*": ModelPrice(input=10.0, output=30.0)}, unknown="zero")
    route = Router(reasoning=scripted("remote:reasoning"), prices=table).route(user(HARD))
    assert route.estimated_cost_usd is not None and route.estimated_cost_usd > 0


def test_prices_of_another_shape_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"prices must map model names .* got list"):
        Router(fast=scripted("local:fast"), prices=[("remote:reasoning", 1.0)])  # type: ignore[arg-type]


def test_an_unpriced_remote_model_has_no_estimate() -> None:
    assert Router(reasoning=scripted("remote:reasoning")).route(user(HARD)).estimated_cost_usd is None


# -- A/B splits --------------------------------------------------------------------------------------


def split_router(percent: float) -> Router:
    return Router(
        fast=scripted("local:fast"),
        standard=scripted("local:standard"),
        splits=[Split(name="bigger-fast", tier="fast", model=scripted("local:candidate"), percent=percent)],
    )


def test_a_split_sends_its_share_of_keys_to_the_candidate() -> None:
    router = split_router(20)
    routes = [router.route(user(SIMPLE), settings=ModelSettings(route_key=f"run-{i}")) for i in range(2000)]
    candidates = sum(r.variant == "bigger-fast:candidate" for r in routes)
    assert 0.17 < candidates / 2000 < 0.23
    assert all((r.model == "local:candidate") == (r.variant == "bigger-fast:candidate") for r in routes)
    assert {r.variant for r in routes} == {"bigger-fast:candidate", "bigger-fast:control"}


def test_a_split_arm_depends_only_on_the_key() -> None:
    keys = [f"run-{i}" for i in range(200)]
    first = [split_router(50).route(user(SIMPLE), settings=ModelSettings(route_key=k)).variant for k in keys]
    again = [split_router(50).route(user(HARD), settings=ModelSettings(route_key=k)).variant for k in keys]
    # a fresh router, another request of the same run: the same arm (HARD goes to `standard`, unsplit)
    assert [
        split_router(50).route(user(SIMPLE), settings=ModelSettings(route_key=k)).variant for k in keys
    ] == first
    assert set(again) == {""}


def test_splits_with_other_names_divide_keys_independently() -> None:
    a = Split(name="a", tier="fast", model=scripted("local:x"), percent=50)
    b = Split(name="b", tier="fast", model=scripted("local:x"), percent=50)
    keys = [f"k{i}" for i in range(1000)]
    agree = sum(a.candidate(k) == b.candidate(k) for k in keys)
    assert 400 < agree < 600


def test_zero_and_hundred_percent_splits() -> None:
    assert split_router(0).route(user(SIMPLE), settings=ModelSettings(route_key="x")).model == "local:fast"
    assert (
        split_router(100).route(user(SIMPLE), settings=ModelSettings(route_key="x")).model
        == "local:candidate"
    )


def test_split_configuration_errors_are_explained() -> None:
    with pytest.raises(ConfigError, match="percent must be within 0-100"):
        Split(name="s", tier="fast", model=scripted("local:x"), percent=120)
    with pytest.raises(ConfigError, match="tier 'reasoning', which has no model"):
        Router(
            fast=scripted("local:f"),
            splits=[Split(name="s", tier="reasoning", model=scripted("x"), percent=5)],
        )


async def test_the_variant_is_recorded_on_the_response() -> None:
    response = await split_router(100).request(user(SIMPLE), settings=ModelSettings(route_key="run-1"))
    assert response.model == "local:candidate"
    assert response.route is not None and response.route.variant == "bigger-fast:candidate"


# -- escalation --------------------------------------------------------------------------------------

FAILURES = [
    ("", "empty answer"),
    ("I'm sorry, but I can't help with that.", "refusal"),
    (ModelResponse(text="The capital is", finish_reason="length"), "cut off at max_tokens"),
    (ModelTimeout("local model did not answer within 2s"), "ModelTimeout"),
    (ModelServerError("HTTP 503 from the endpoint"), "ModelServerError"),
]


@pytest.mark.parametrize(("failure", "why"), FAILURES, ids=[w for _, w in FAILURES])
async def test_a_failed_fast_answer_escalates_to_the_next_tier(failure: object, why: str) -> None:
    fast = scripted("local:fast", [failure])
    standard = scripted("local:standard", ["Paris"])
    response = await Router(fast=fast, standard=standard).request(user(SIMPLE))
    assert response.text == "Paris" and response.model == "local:standard"
    route = response.route
    assert route is not None and route.tier == "standard" and route.model == "local:standard"
    assert len(route.escalations) == 1 and route.escalations[0].startswith("fast local:fast: ")
    assert why in route.escalations[0] and "escalated to standard" in route.reason
    assert (fast.request_count, standard.request_count) == (1, 1)


async def test_an_escalated_call_charges_the_tokens_of_both_tries() -> None:
    fast = ScriptedModel([""], name="local:fast", usage=Usage(input_tokens=100, output_tokens=1))
    standard = ScriptedModel(["Paris"], name="local:standard", usage=Usage(input_tokens=100, output_tokens=3))
    response = await Router(fast=fast, standard=standard).request(user(SIMPLE))
    assert response.usage == Usage(input_tokens=200, output_tokens=4)


async def test_a_tool_call_that_breaks_its_schema_escalates() -> None:
    tool = ToolDefinition(
        name="lookup_order",
        parameters={
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    )
    bad = ToolCall(call_id="c1", name="lookup_order", arguments={"order": 1042})
    fast = scripted("local:fast", [bad])
    standard = scripted("local:standard", [call("lookup_order", order_id="1042")])
    response = await Router(fast=fast, standard=standard).request(user("Where is order 1042?"), tools=[tool])
    assert response.tool_calls[0].arguments == {"order_id": "1042"}
    assert response.route is not None
    assert "missing required property 'order_id'" in response.route.escalations[0]


async def test_a_good_fast_answer_is_kept_and_nothing_else_is_asked() -> None:
    fast, standard = scripted("local:fast", ["Paris"]), scripted("local:standard", [])
    response = await Router(fast=fast, standard=standard).request(user(SIMPLE))
    assert response.text == "Paris" and standard.request_count == 0
    assert response.route is not None and response.route.escalations == ()


async def test_the_last_tier_answer_is_returned_even_when_poor_and_its_error_raised() -> None:
    router = Router(fast=scripted("local:fast", [""]), standard=scripted("local:standard", [""]))
    response = await router.request(user(SIMPLE))
    assert response.text == "" and response.model == "local:standard"
    failing = Router(
        fast=scripted("local:fast", [""]), standard=scripted("local:standard", [ModelServerError("HTTP 500")])
    )
    with pytest.raises(ModelServerError):
        await failing.request(user(SIMPLE))


async def test_without_escalation_the_first_answer_stands() -> None:
    router = Router(
        fast=scripted("local:fast", [""]), standard=scripted("local:standard", []), escalate=False
    )
    assert (await router.request(user(SIMPLE))).model == "local:fast"


async def test_a_deadline_bounds_the_local_first_call_only_when_a_higher_tier_can_answer() -> None:
    fast = SettingsRecorder("local:fast", ["Paris", "Paris"])
    router = Router(fast=fast, standard=scripted("local:standard"), deadlines={"fast": 2.0})
    await router.request(user(SIMPLE), settings=ModelSettings(timeout_s=60))
    assert fast.settings[-1].timeout_s == 2.0
    alone = Router(fast=fast, deadlines={"fast": 2.0})
    await alone.request(user(SIMPLE), settings=ModelSettings(timeout_s=60))
    assert fast.settings[-1].timeout_s == 60


async def test_tokens_of_a_replaced_answer_are_never_streamed() -> None:
    seen: list[str] = []
    router = Router(
        fast=scripted("local:fast", ["I cannot help with that."]), standard=scripted("local:s", ["Paris"])
    )
    await router.request(user(SIMPLE), on_token=seen.append)
    assert "".join(seen) == "Paris"
    seen.clear()
    await Router(fast=scripted("local:fast", ["Lyon"]), standard=scripted("local:s", [])).request(
        user(SIMPLE), on_token=seen.append
    )
    assert "".join(seen) == "Lyon"


# -- the classifier (real MiniLM embeddings) ---------------------------------------------------------

EXAMPLES = [
    ("What is the capital of Spain?", "fast"),
    ("Translate 'good morning' into French.", "fast"),
    ("What time zone is Tokyo in?", "fast"),
    ("Spell 'necessary' backwards.", "fast"),
    ("Say hello to the customer.", "fast"),
    ("Prove that the square root of two is irrational.", "reasoning"),
    ("Design a sharding strategy for a multi-tenant database and justify the trade-offs.", "reasoning"),
    ("Work out step by step how long two trains take to meet, then check the result.", "reasoning"),
    ("Find the bug in this concurrent queue and explain the race condition.", "reasoning"),
    ("Plan a migration of a monolith to services, with risks and a rollback strategy.", "reasoning"),
]


def test_a_fitted_classifier_routes_unseen_requests_by_meaning() -> None:
    router = three_tiers().fit(EXAMPLES)
    assert router.route(user("What's the capital city of Italy?")).tier == "fast"
    route = router.route(user("Derive a proof that there are infinitely many prime numbers."))
    assert route.tier == "reasoning"
    assert route.reason.startswith("classifier: reasoning (similarity reasoning ")


def test_a_classifier_needs_two_tiers_and_known_tier_names() -> None:
    with pytest.raises(ConfigError, match="at least two tiers"):
        three_tiers().fit([("hi", "fast")])
    with pytest.raises(ConfigError, match="has tier 'slow'"):
        three_tiers().fit([("hi", "slow")])  # type: ignore[list-item]


# -- the journal, and configuration --------------------------------------------------------------------


async def test_the_route_lands_in_the_journal_with_the_response() -> None:
    store = MemoryStore()
    router = Router(fast=scripted("local:fast", ["Paris"]), standard=scripted("local:standard", []))
    agent = Agent("geo", instructions="Answer briefly.", model=router)
    result = await Runner(store).run(agent, SIMPLE)
    assert result.ok and result.output == "Paris"
    responded = [s.event for s in await store.load(result.run_id) if isinstance(s.event, ModelResponded)]
    route = responded[0].response.route
    assert isinstance(route, Route) and route.tier == "fast" and route.model == "local:fast"
    assert "complexity" in route.reason


def test_a_route_round_trips_through_json() -> None:
    route = Route(
        tier="fast", model="local:a", reason="r", complexity=0.1, estimated_cost_usd=None, variant="s:a"
    )
    response = ModelResponse(text="x", route=route, cache="semantic", cache_similarity=0.93)
    assert ModelResponse.model_validate_json(response.model_dump_json()) == response


def test_a_router_is_built_from_a_models_file(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        """
[models.small]
model = "local:qwen2.5-coder-0.5b"
tier = "fast"

[models.big]
model = "openai:gpt-4o@http://127.0.0.1:9/v1"
tier = "reasoning"
price = { input = 2.5, output = 10.0 }

[models.onhost]
model = "openai:qwen@http://127.0.0.1:9/v1"
tier = "reasoning"
private = true
"""
    )
    router = Router.from_config(load_models(path))
    assert [m.name for m in router.tiers["reasoning"]] == [
        "openai:gpt-4o@http://127.0.0.1:9/v1",
        "openai:qwen@http://127.0.0.1:9/v1",
    ]
    assert router.route(user(HARD)).model == "openai:gpt-4o@http://127.0.0.1:9/v1"
    assert (router.route(user(HARD)).estimated_cost_usd or 0) > 0
    sensitive = router.route(user(HARD), settings=ModelSettings(sensitive=True))
    assert sensitive.model == "openai:qwen@http://127.0.0.1:9/v1" and sensitive.private
