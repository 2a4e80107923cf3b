"""The response cache: exact and semantic hits, scopes, TTL, LRU, sensitive requests, Redis sharing."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tether import Agent, Runner
from tether.embeddings import MiniLMEmbedder
from tether.journal import MemoryStore, ModelResponded
from tether.models import (
    AssistantMessage,
    CachedModel,
    CacheStore,
    MemoryCacheStore,
    Message,
    ModelResponse,
    ModelSettings,
    RedisCacheStore,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from tether.testing import FakeClock, ScriptedModel, call

pytestmark = pytest.mark.anyio

SYSTEM = SystemMessage(content="You are the support agent of an online shop.")
USAGE = Usage(input_tokens=120, output_tokens=30)


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def ask(text: str) -> list[Message]:
    return [SYSTEM, UserMessage(content=text)]


def counting_model(name: str = "local:qwen2.5-coder-0.5b") -> ScriptedModel:
    """Answers each request with a numbered answer, so a served copy is told apart from a new answer."""
    answers = iter(range(1, 10_000))
    return ScriptedModel(lambda messages, tools: f"answer {next(answers)}", name=name, usage=USAGE)


# -- exact -------------------------------------------------------------------------------------------


async def test_the_same_request_is_answered_once_and_the_hit_is_marked() -> None:
    inner = counting_model()
    model = CachedModel(inner)
    first = await model.request(ask("Where is my order?"))
    second = await model.request(ask("Where is my order?"))
    assert (first.text, second.text) == ("answer 1", "answer 1")
    assert inner.request_count == 1
    assert first.cache is None and second.cache == "exact" and second.cache_similarity is None
    assert second.usage == Usage() and first.usage == USAGE  # a hit spends nothing
    assert (model.stats.exact_hits, model.stats.misses, model.stats.saved) == (1, 1, USAGE)
    assert model.name == inner.name  # prices and the journal see the model that answered


ACME = "support/acme"


@pytest.mark.parametrize(
    ("other_messages", "other_settings"),
    [
        (ask("Where is my parcel?"), ModelSettings(cache_scope=ACME)),
        (
            [SystemMessage(content="You are a pirate."), UserMessage(content="Where is my order?")],
            ModelSettings(cache_scope=ACME),
        ),
        (ask("Where is my order?"), ModelSettings(cache_scope="support/globex")),
        (ask("Where is my order?"), ModelSettings(cache_scope=ACME, max_tokens=64)),
        (ask("Where is my order?"), ModelSettings(cache_scope=ACME, tool_choice="none")),
    ],
    ids=["other question", "other instructions", "other tenant", "other max_tokens", "other tool_choice"],
)
async def test_anything_that_changes_the_answer_misses(
    other_messages: list[Message], other_settings: ModelSettings
) -> None:
    inner = counting_model()
    model = CachedModel(inner)
    await model.request(ask("Where is my order?"), settings=ModelSettings(cache_scope=ACME))
    assert (
        await model.request(ask("Where is my order?"), settings=ModelSettings(cache_scope=ACME))
    ).cache == "exact"
    response = await model.request(other_messages, settings=other_settings)
    assert response.cache is None and inner.request_count == 2


async def test_other_tools_miss() -> None:
    inner = counting_model()
    model = CachedModel(inner)
    tool = ToolDefinition(name="lookup_order", parameters={"type": "object"})
    await model.request(ask("Where is my order?"), tools=[tool])
    assert (await model.request(ask("Where is my order?"))).cache is None


async def test_routing_hints_timeouts_and_budgets_do_not_change_the_key() -> None:
    inner = counting_model()
    model = CachedModel(inner)
    await model.request(ask("Where is my order?"))
    settings = ModelSettings(timeout_s=5, hints=("latency_critical",), budget_usd=0.01, route_key="run-9")
    assert (await model.request(ask("Where is my order?"), settings=settings)).cache == "exact"


async def test_sampled_answers_are_neither_stored_nor_served() -> None:
    inner = counting_model()
    model = CachedModel(inner)
    warm = ModelSettings(temperature=0.7)
    await model.request(ask("Tell me a joke"), settings=warm)
    assert (await model.request(ask("Tell me a joke"), settings=warm)).text == "answer 2"
    assert model.stats.stored == 0 and model.stats.bypassed == 2


async def test_tool_calls_are_cached_with_fresh_call_ids() -> None:
    inner = ScriptedModel([call("lookup_order", order_id="1042")], name="local:m")
    model = CachedModel(inner)
    first = await model.request(ask("Where is order 1042?"))
    second = await model.request(ask("Where is order 1042?"))
    assert second.cache == "exact" and second.tool_calls[0].arguments == {"order_id": "1042"}
    assert second.tool_calls[0].call_id != first.tool_calls[0].call_id  # ids stay unique within a run


async def test_a_later_step_hits_although_its_call_ids_differ_between_runs() -> None:
    inner = counting_model()
    model = CachedModel(inner)

    def step_two(call_id: str) -> list[Message]:
        return [
            *ask("Where is order 1042?"),
            AssistantMessage(
                tool_calls=(ToolCall(call_id=call_id, name="lookup_order", arguments={"order_id": "1042"}),)
            ),
            ToolResultMessage(call_id=call_id, name="lookup_order", content='{"status": "shipped"}'),
        ]

    await model.request(step_two("call_run1_a"))
    assert (await model.request(step_two("call_run2_b"))).cache == "exact"


@pytest.mark.parametrize(
    "reply",
    [
        ModelResponse(text="Your order is", finish_reason="length"),
        ModelResponse(text=""),
        ModelResponse(tool_calls=(ToolCall(call_id="c", name="lookup_order", arguments='{"order_id": '),)),
    ],
    ids=["cut off", "empty", "unparsed call"],
)
async def test_answers_not_worth_repeating_are_not_stored(reply: ModelResponse) -> None:
    model = CachedModel(ScriptedModel([reply, reply], name="local:m"))
    await model.request(ask("Where is my order?"))
    assert (await model.request(ask("Where is my order?"))).cache is None and model.stats.stored == 0


async def test_a_hit_is_streamed_to_on_token() -> None:
    model = CachedModel(counting_model())
    await model.request(ask("Where is my order?"))
    seen: list[str] = []
    await model.request(ask("Where is my order?"), on_token=seen.append)
    assert seen == ["answer 1"]


# -- sensitive requests --------------------------------------------------------------------------------


async def test_a_request_marked_sensitive_is_never_stored_nor_served() -> None:
    inner = counting_model()
    model = CachedModel(inner)
    secret = ModelSettings(sensitive=True)
    await model.request(ask("What is my balance?"), settings=secret)
    await model.request(ask("What is my balance?"), settings=secret)
    assert inner.request_count == 2 and model.stats.stored == 0
    # an answer stored for the same words, unmarked, is not served to the marked request either
    await model.request(ask("What is my balance?"))
    assert (await model.request(ask("What is my balance?"), settings=secret)).cache is None


@pytest.mark.parametrize(
    "text",
    [
        "Update my email to jane.doe@example.com",
        "Refund to card 4111 1111 1111 1111",
        "My SSN is 536-22-8891",
    ],
)
async def test_requests_holding_personal_data_are_never_cached(minilm: MiniLMEmbedder, text: str) -> None:
    store = MemoryCacheStore()
    model = CachedModel(counting_model(), embedder=minilm, store=store)
    await model.request(ask(text))
    second = await model.request(ask(text))
    assert second.cache is None and len(store) == 0 and model.stats.bypassed == 2


# -- TTL and LRU -----------------------------------------------------------------------------------


async def test_entries_expire_after_ttl_by_the_injected_clock() -> None:
    clock = FakeClock()
    inner = counting_model()
    model = CachedModel(inner, ttl_s=60, clock=clock)
    await model.request(ask("Where is my order?"))
    clock.advance(59)
    assert (await model.request(ask("Where is my order?"))).cache == "exact"
    clock.advance(2)
    expired = await model.request(ask("Where is my order?"))
    assert expired.cache is None and expired.text == "answer 2"


async def test_the_least_recently_used_entry_is_evicted_at_the_bound() -> None:
    inner = counting_model()
    model = CachedModel(inner, max_entries=2)
    for question in ("a?", "b?", "a?", "c?"):  # "a" used again after "b", so "b" is the oldest
        await model.request(ask(question))
    assert len(model.store) == 2  # type: ignore[arg-type]
    assert (await model.request(ask("a?"))).cache == "exact"
    assert (await model.request(ask("b?"))).cache is None


# -- semantic (real MiniLM embeddings) -------------------------------------------------------------

# MiniLM similarities of these pairs: 0.99, 0.90, 0.82
PARAPHRASES = [
    ("How do I reset my password?", "How can I reset my password?"),
    ("How do I reset my password?", "I forgot my password, how do I change it?"),
    ("Can I pay with PayPal?", "Do you accept PayPal?"),
]


@pytest.mark.parametrize(("original", "paraphrase"), PARAPHRASES)
async def test_a_paraphrase_is_served_from_the_semantic_cache(
    minilm: MiniLMEmbedder, original: str, paraphrase: str
) -> None:
    inner = counting_model()
    model = CachedModel(inner, embedder=minilm, similarity=0.8)
    await model.request(ask(original))
    hit = await model.request(ask(paraphrase))
    assert hit.cache == "semantic" and hit.text == "answer 1" and inner.request_count == 1
    assert hit.cache_similarity is not None and 0.8 <= hit.cache_similarity < 1.0


@pytest.mark.parametrize(
    "unrelated", ["Do you ship to Canada?", "Can I pay with PayPal?", "Write a poem about the sea."]
)
async def test_an_unrelated_request_misses_the_semantic_cache(minilm: MiniLMEmbedder, unrelated: str) -> None:
    inner = counting_model()
    model = CachedModel(inner, embedder=minilm, similarity=0.8)
    await model.request(ask("How do I reset my password?"))
    assert (await model.request(ask(unrelated))).cache is None and inner.request_count == 2


async def test_the_threshold_decides_between_hit_and_miss(minilm: MiniLMEmbedder) -> None:
    # similarity 0.82: a hit at 0.8, a miss at 0.85
    for similarity, expected in ((0.8, "semantic"), (0.85, None)):
        model = CachedModel(counting_model(), embedder=minilm, similarity=similarity)
        await model.request(ask("Can I pay with PayPal?"))
        assert (await model.request(ask("Do you accept PayPal?"))).cache == expected


async def test_the_default_threshold_tells_near_questions_apart(minilm: MiniLMEmbedder) -> None:
    # similarity 0.71: the same words about another country, which a lax threshold would answer alike
    model = CachedModel(counting_model(), embedder=minilm)
    await model.request(ask("Do you ship to Canada?"))
    assert (await model.request(ask("Do you ship to Mexico?"))).cache is None


async def test_a_request_with_other_numbers_never_matches_semantically(minilm: MiniLMEmbedder) -> None:
    inner = counting_model()
    model = CachedModel(inner, embedder=minilm, similarity=0.8)
    await model.request(ask("What is the status of order 1042?"))
    assert (await model.request(ask("What's the status of order 1043?"))).cache is None
    assert (await model.request(ask("What's the status of my order 1042?"))).cache == "semantic"


async def test_semantic_hits_stay_within_their_scope(minilm: MiniLMEmbedder) -> None:
    model = CachedModel(counting_model(), embedder=minilm, similarity=0.8)
    await model.request(
        ask("How do I reset my password?"), settings=ModelSettings(cache_scope="support/acme")
    )
    other_tenant = await model.request(
        ask("How can I reset my password?"), settings=ModelSettings(cache_scope="support/globex")
    )
    same_tenant = await model.request(
        ask("How can I reset my password?"), settings=ModelSettings(cache_scope="support/acme")
    )
    assert (other_tenant.cache, same_tenant.cache) == (None, "semantic")


async def test_semantic_matching_needs_the_earlier_conversation_to_be_equal(minilm: MiniLMEmbedder) -> None:
    model = CachedModel(counting_model(), embedder=minilm, similarity=0.8)
    await model.request(ask("How do I reset my password?"))
    other_context = [
        SystemMessage(content="You are a bank's assistant."),
        UserMessage(content="How can I reset my password?"),
    ]
    assert (await model.request(other_context)).cache is None


async def test_semantic_entries_expire_too(minilm: MiniLMEmbedder) -> None:
    clock = FakeClock()
    model = CachedModel(counting_model(), embedder=minilm, similarity=0.8, ttl_s=10, clock=clock)
    await model.request(ask("How do I reset my password?"))
    clock.advance(11)
    assert (await model.request(ask("How can I reset my password?"))).cache is None


# -- Redis: one cache for every worker -------------------------------------------------------------


async def test_two_workers_share_one_redis_cache(minilm: MiniLMEmbedder, redis_prefix: str) -> None:
    clock = FakeClock()
    worker_a = CachedModel(
        counting_model(),
        embedder=minilm,
        similarity=0.8,
        clock=clock,
        store=RedisCacheStore(prefix=redis_prefix),
    )
    inner_b = counting_model()
    worker_b = CachedModel(
        inner_b, embedder=minilm, similarity=0.8, clock=clock, store=RedisCacheStore(prefix=redis_prefix)
    )
    await worker_a.request(ask("How do I reset my password?"))
    exact = await worker_b.request(ask("How do I reset my password?"))
    semantic = await worker_b.request(ask("How can I reset my password?"))
    assert (exact.cache, semantic.cache) == ("exact", "semantic")
    assert exact.text == semantic.text == "answer 1" and inner_b.request_count == 0
    # what worker b stores, worker a is served
    await worker_b.request(ask("Do you ship to Canada?"))
    assert (await worker_a.request(ask("Do you ship to Canada?"))).cache == "exact"
    await worker_a.aclose()
    await worker_b.aclose()


async def test_redis_entries_expire_by_the_clock_and_sensitive_requests_stay_out(
    minilm: MiniLMEmbedder, redis_prefix: str
) -> None:
    import redis.asyncio as aioredis

    clock = FakeClock()
    model = CachedModel(
        counting_model(), embedder=minilm, ttl_s=30, clock=clock, store=RedisCacheStore(prefix=redis_prefix)
    )
    await model.request(ask("Where is my order?"))
    await model.request(ask("Send it to jane.doe@example.com"))
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    stored = [key async for key in client.scan_iter(match=redis_prefix + "e:*")]
    await client.aclose()
    assert len(stored) == 1  # the request with an email address was never written to Redis
    clock.advance(31)
    assert (await model.request(ask("Where is my order?"))).cache is None
    await model.aclose()


async def test_an_entry_redis_dropped_by_itself_is_a_miss_and_leaves_the_index(
    minilm: MiniLMEmbedder, redis_prefix: str
) -> None:
    import redis.asyncio as aioredis

    model = CachedModel(
        counting_model(), embedder=minilm, similarity=0.8, store=RedisCacheStore(prefix=redis_prefix)
    )
    await model.request(ask("How do I reset my password?"))
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    entries = [key async for key in client.scan_iter(match=redis_prefix + "e:*")]
    await client.delete(*entries)  # as Redis's own expiry (PEXPIRE ttl_s) would
    assert (await model.request(ask("How can I reset my password?"))).cache is None
    (index,) = [key async for key in client.scan_iter(match=redis_prefix + "p:*")]
    assert len(await client.hkeys(index)) == 1  # only the new request's vector is left
    await client.aclose()
    await model.aclose()


async def test_the_redis_store_evicts_the_least_recently_used(redis_prefix: str) -> None:
    model = CachedModel(counting_model(), store=RedisCacheStore(prefix=redis_prefix, max_entries=2))
    for question in ("a?", "b?", "a?", "c?"):
        await model.request(ask(question))
    assert (await model.request(ask("a?"))).cache == "exact"
    assert (await model.request(ask("b?"))).cache is None
    await model.aclose()


# -- the journal -------------------------------------------------------------------------------------


@pytest.mark.parametrize("store_factory", [MemoryCacheStore], ids=["memory"])
async def test_a_hit_shows_in_the_journal(store_factory: Callable[[], CacheStore]) -> None:
    journal = MemoryStore()
    model = CachedModel(counting_model(), store=store_factory())
    agent = Agent("faq", instructions="Answer briefly.", model=model)
    first = await Runner(journal).run(agent, "What are your opening hours?")
    second = await Runner(journal).run(agent, "What are your opening hours?")
    assert first.output == second.output == "answer 1"
    responded = [s.event for s in await journal.load(second.run_id) if isinstance(s.event, ModelResponded)]
    assert responded[0].response.cache == "exact" and responded[0].response.usage == Usage()
