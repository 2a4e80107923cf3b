"""The router: one `Model` that sends each request to the tier it needs, and says why.

```python
from tether.models import Router
from tether.models.llamacpp import LlamaCppModel
from tether.models.openai_compat import OpenAICompatModel

router = Router(
    fast=LlamaCppModel("qwen2.5-coder-0.5b"),
    standard=LlamaCppModel("qwen2.5-coder-1.5b"),
    reasoning=OpenAICompatModel("gpt-4o", base_url="https://api.openai.com/v1"),
    prices={"openai:gpt-4o@*": (2.50, 10.00)},  # USD per million input, output tokens
)
agent = Agent("support", model=router, ...)
```

How a request's tier is chosen, in order (each step is written into `Route.reason`):

1. Hints (`ModelSettings.hints`): `tier:<name>` picks that tier, `reasoning` the reasoning tier,
   `latency_critical` the fast one.
2. Otherwise a classifier, when the router was `fit()` on labelled examples: the tier whose centroid of
   MiniLM embeddings is nearest to the last user message.
3. Otherwise the heuristic complexity estimate (`estimate_complexity`) against `thresholds`.
4. Sensitivity: a request marked sensitive, or with personal data in what a user wrote or a tool
   returned, may only go to private models; the nearest tier that has one is used (upwards first).
5. A/B splits (`Split`) send a fixed share of a tier's requests to another model, by a hash of
   `ModelSettings.route_key`, so that every call of a run lands in the same arm.
6. Budget (`ModelSettings.budget_usd`): while the estimated worst-case cost of the call (the prompt,
   plus `max_tokens` of output, at the model's price) is over it, the tier moves down.

The chosen model answers first; when it fails (a `ModelError`, or a `deadlines` timeout) or its answer
fails the quality check (`answer_problem`: empty, refusal, cut off, a tool call that does not match its
schema), the next tier up answers instead (within the same sensitivity and budget rules). Every answer
carries its `Route`, which the journal records with the response.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, get_args, runtime_checkable

from ..exceptions import ConfigError, ModelError
from ..guardrails import PII_ENTITIES, PIIEntity
from ._base import Model, ModelSettings, TokenCallback
from ._config import ModelsConfig, Tier
from ._hybrid import answer_problem, is_private_name, sensitive_reason
from ._messages import Message, ModelResponse, Route, ToolDefinition, Usage, UserMessage

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from ..embeddings import Embedder

__all__ = [
    "HINTS",
    "Complexity",
    "QualityCheck",
    "Router",
    "Split",
    "TierClassifier",
    "estimate_complexity",
]

TIERS: tuple[Tier, ...] = get_args(Tier)
HINTS = ("reasoning", "latency_critical", "tier:fast", "tier:standard", "tier:reasoning")
"""The hints a router understands (`ModelSettings.hints`)."""

QualityCheck = Callable[[ModelResponse, Sequence[ToolDefinition], ModelSettings], "str | None"]
"""Says what is wrong with an answer (None: nothing), deciding whether the next tier is asked."""

# -- the complexity estimate --------------------------------------------------------------------------

# Each signal is scaled to [0, 1] and weighted; the weights sum to 1, so the estimate is in [0, 1].
_WEIGHTS: Mapping[str, float] = {
    "length": 0.15,  # words of the request: 150 or more count fully
    "tools": 0.10,  # tools offered: 6 or more count fully
    "steps": 0.20,  # multi-step markers (then, after that, finally, numbered lines): 3 or more
    "reasoning": 0.20,  # words asking for analysis (why, explain, compare, prove, design...): 2 or more
    "code": 0.15,  # a code fence, or two or more code tokens (def, return, {...}, =>, Traceback)
    "numbers": 0.10,  # numbers in the request (arithmetic, data): 4 or more
    "questions": 0.10,  # questions beyond the first: 2 more count fully
}
# Words are matched as whole tokens against sets, phrases as substrings of the lowercased text: one pass
# of one regex, not one regex per signal (the estimate runs on every model call).
_TOKEN = re.compile(r"[A-Za-z_][\w'-]*|\d+(?:[.,]\d+)*")
_STEP_WORDS = frozenset(
    {"then", "afterwards", "next", "finally", "first", "second", "third", "step", "steps", "before"}
)
_STEP_PHRASES = ("after that", "followed by", "and also", "once you")
_LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*])\s", re.MULTILINE)
_REASONING_WORDS = frozenset(
    {
        *("why", "explain", "prove", "derive", "compare", "contrast", "analyse", "analyze", "analysis"),
        *("tradeoff", "tradeoffs", "trade-off", "trade-offs", "design", "optimise", "optimize", "plan"),
        *("reason", "evaluate", "justify", "debug", "refactor", "implement", "algorithm", "complexity"),
        *("calculate", "estimate", "strategy", "architecture"),
    }
)
_REASONING_PHRASES = ("how many", "how much", "what if", "pros and cons")
# case-sensitive: "Class" and "Function" in prose are words, `class` and `function` in code are code
_CODE_WORDS = frozenset(
    {"def", "class", "return", "import", "function", "const", "let", "var", "async", "await", "lambda"}
    | {"SELECT", "INSERT", "Traceback"}
)
_MAX_CHARS = 20_000
_CODE_SYMBOLS = re.compile(r"[{};]\s*$|=>|==|!=|\w\(\w*\)|^\s{4,}\S", re.MULTILINE)


@dataclass(frozen=True, kw_only=True)
class Complexity:
    """How demanding a request looks, from signals in its text.

    Attributes:
        score: the weighted sum of the signals, in [0, 1].
        signals: each signal scaled to [0, 1] (`length`, `tools`, `steps`, `reasoning`, `code`, `numbers`,
            `questions`).
    """

    score: float
    signals: Mapping[str, float]

    def describe(self) -> str:
        """The score and the signals that contributed, strongest first (`0.42: reasoning 1.0, steps 0.67`)."""
        parts = sorted(
            ((name, value) for name, value in self.signals.items() if value > 0),
            key=lambda nv: -_WEIGHTS[nv[0]] * nv[1],
        )
        shown = ", ".join(f"{name} {value:.2g}" for name, value in parts) or "no signal"
        return f"{self.score:.2f} ({shown})"


def estimate_complexity(messages: Sequence[Message], tools: Sequence[ToolDefinition] = ()) -> Complexity:
    """Estimate how demanding a request is, from its last user message and the tools offered.

    The signals are cheap (one tokenising pass over one message and a few substring counts) and documented in
    `_WEIGHTS`: length, tools offered, multi-step markers, words asking for analysis, code, numbers and
    extra questions. The estimate ranks requests; `Router.thresholds` turns it into tiers.

    Args:
        messages: the conversation; its last user message is what is estimated.
        tools: the tools offered.

    Returns:
        The score in [0, 1] and each signal.
    """
    # every signal saturates long before this (150 words, 3 steps...): a pasted megabyte costs no more
    text = _last_user_text(messages)[:_MAX_CHARS]
    lower = text.lower()
    steps = reasoning = code = numbers = 0
    for token in _TOKEN.findall(text):
        if token[0].isdigit():
            numbers += 1
            continue
        word = token.lower()
        steps += word in _STEP_WORDS
        reasoning += word in _REASONING_WORDS
        code += token in _CODE_WORDS
    steps += sum(lower.count(p) for p in _STEP_PHRASES)
    if "\n" in text or text[:1] in ("-", "*") or text[:1].isdigit():
        steps += len(_LIST_ITEM.findall(text))
    reasoning += sum(lower.count(p) for p in _REASONING_PHRASES)
    if any(c in text for c in "{};=!(") or "    " in text:
        code += len(_CODE_SYMBOLS.findall(text))
    signals = {
        "length": min(1.0, len(text.split()) / 150),
        "tools": min(1.0, len(tools) / 6),
        "steps": min(1.0, steps / 3),
        "reasoning": min(1.0, reasoning / 2),
        "code": 1.0 if "```" in text or code >= 2 else 0.5 * code,
        "numbers": min(1.0, numbers / 4),
        "questions": min(1.0, max(0, text.count("?") - 1) / 2),
    }
    score = sum(_WEIGHTS[name] * value for name, value in signals.items())
    return Complexity(score=round(min(1.0, score), 4), signals=signals)


def _last_user_text(messages: Sequence[Message]) -> str:
    for message in reversed(messages):
        if isinstance(message, UserMessage):
            return message.content
    return ""


# -- the optional classifier --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TierClassifier:
    """A nearest-centroid classifier over sentence embeddings: which tier a request needs.

    Trained on examples the user labels (`TierClassifier.fit`, or `Router.fit`); a request goes to the
    tier whose mean embedding is most similar to its last user message. A handful of examples per tier
    is enough to separate "look this up" from "work this out"; more examples make the centroids steadier.

    Attributes:
        embedder: the encoder (the offline MiniLM by default).
        tiers: the tiers it knows, in the order of `centroids`' rows.
        centroids: one unit-length mean embedding per tier.
        counts: how many examples each tier was trained on.
    """

    embedder: Embedder
    tiers: tuple[Tier, ...]
    centroids: npt.NDArray[np.float32]
    counts: tuple[int, ...]

    @classmethod
    def fit(cls, examples: Iterable[tuple[str, Tier]], embedder: Embedder | None = None) -> TierClassifier:
        """Train on `(request text, tier)` pairs.

        Raises:
            ConfigError: a tier name is unknown, or fewer than two tiers have examples.
            ImportError: numpy (or, for the default encoder, its model package) is not installed.
        """
        from ..embeddings import MiniLMEmbedder, require_numpy

        require_numpy("TierClassifier")
        import numpy as np

        by_tier: dict[Tier, list[str]] = {}
        for text, tier in examples:
            if tier not in TIERS:
                raise ConfigError(
                    f"example {text[:40]!r} has tier {tier!r}; the tiers are {', '.join(TIERS)}"
                )
            by_tier.setdefault(tier, []).append(text)
        if len(by_tier) < 2:
            raise ConfigError(
                f"a tier classifier needs examples of at least two tiers; got {sorted(by_tier) or 'none'}"
            )
        encoder = embedder if embedder is not None else MiniLMEmbedder()
        tiers = tuple(t for t in TIERS if t in by_tier)
        rows = []
        for tier in tiers:
            mean = encoder.embed(by_tier[tier]).mean(axis=0)
            rows.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
        return cls(
            embedder=encoder,
            tiers=tiers,
            centroids=np.stack(rows).astype(np.float32),
            counts=tuple(len(by_tier[t]) for t in tiers),
        )

    def similarities(self, text: str) -> dict[Tier, float]:
        """The cosine similarity of `text` to each tier's centroid."""
        vector = self.embedder.embed([text])[0]
        return {tier: float(s) for tier, s in zip(self.tiers, self.centroids @ vector, strict=True)}

    def predict(self, text: str) -> tuple[Tier, dict[Tier, float]]:
        """The nearest tier, and the similarity to every tier."""
        sims = self.similarities(text)
        return max(sims, key=lambda t: sims[t]), sims


# -- A/B splits and prices ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Split:
    """Sends a fixed share of one tier's requests to another model, to compare the two later.

    Which arm a request falls in is a hash of the split's name and `ModelSettings.route_key` (the run
    id, when the loop passes it): the same key always lands in the same arm, and different splits
    divide the same keys independently. The arm is recorded as `Route.variant` (`<name>:candidate` or
    `<name>:control`), so outcomes can be grouped by it in the journal.

    Attributes:
        name: names the experiment in `Route.variant`.
        tier: the tier whose requests are split.
        model: the candidate model.
        percent: the share of the tier's requests the candidate gets, 0-100.
    """

    name: str
    tier: Tier
    model: Model
    percent: float

    def __post_init__(self) -> None:
        if self.tier not in TIERS:
            raise ConfigError(f"split {self.name!r}: tier {self.tier!r} is not one of {', '.join(TIERS)}")
        if not 0 <= self.percent <= 100:
            raise ConfigError(f"split {self.name!r}: percent must be within 0-100; got {self.percent!r}")
        if not self.name or ":" in self.name:
            raise ConfigError(f"split name {self.name!r} must be non-empty and hold no ':'")

    def candidate(self, key: str) -> bool:
        """Whether requests with this key go to the candidate."""
        digest = hashlib.sha256(f"{self.name}\x00{key}".encode()).digest()
        # 2**64 buckets: the share is exact to far better than any split a user asks for
        return int.from_bytes(digest[:8], "big") / 2**64 * 100 < self.percent


@runtime_checkable
class PriceList(Protocol):
    """Anything that prices a call, such as `tether.governance.PriceTable`."""

    def cost(self, model: str, usage: Usage) -> float: ...


Prices = Mapping[str, "tuple[float, float] | Any"] | PriceList
"""Prices per model name (a glob such as `openai:gpt-4o@*` matches every endpoint): `(input, output)` USD
per million tokens, or an object with `input` and `output` (`ModelPriceConfig`, governance's
`ModelPrice`); or a whole price list with a `cost(model, usage)` method (governance's `PriceTable`)."""


def _estimate_tokens(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> int:
    """Prompt tokens, roughly: 4 characters a token, plus a few per message for the chat template."""
    chars = sum(len(getattr(m, "content", "")) for m in messages)
    for message in messages:
        for call in getattr(message, "tool_calls", ()):
            chars += len(call.name) + len(json.dumps(call.arguments))
    if tools:
        chars += len(json.dumps([t.model_dump() for t in tools]))
    return chars // 4 + 4 * len(messages)


# -- the router -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Decision:
    route: Route
    chain: tuple[tuple[Tier, Model], ...]


class Router(Model):
    """A model that routes each request to a tier of models and journals why (see the module docstring).

    Args:
        fast: the fast tier: one model, or several where the first is used and the others are there for
            requests the first may not take (a private model for sensitive requests).
        standard: the standard tier.
        reasoning: the reasoning tier.
        private: which models keep requests on this host, by name or glob (`local:*`), or the models
            themselves; None: the embedded `local:` models.
        prices: what each model costs, for `Route.estimated_cost_usd` and per-call budgets; local models
            are free, and a remote model without a price has no estimate (and no budget applies to it).
        thresholds: complexity scores at which requests move from fast to standard, and from standard
            to reasoning.
        classifier: a trained `TierClassifier` (or call `fit`); it replaces the heuristic thresholds.
        splits: A/B splits.
        escalate: ask the next tier up when an answer fails `quality_check` or the model fails.
        deadlines: per tier, the longest a call may take when a higher tier could still answer (a
            local-first call that would take too long gives way instead of using `timeout_s`).
        quality_check: decides whether an answer is good enough to keep (`answer_problem` by default).
        pii_entities: the kinds of personal data that make a request sensitive.

    Raises:
        ConfigError: no tier has a model, or an argument is out of range.
    """

    def __init__(
        self,
        fast: Model | Sequence[Model] | None = None,
        standard: Model | Sequence[Model] | None = None,
        reasoning: Model | Sequence[Model] | None = None,
        *,
        private: Iterable[str | Model] | None = None,
        prices: Prices | None = None,
        thresholds: tuple[float, float] = (0.2, 0.45),
        classifier: TierClassifier | None = None,
        splits: Sequence[Split] = (),
        escalate: bool = True,
        deadlines: Mapping[Tier, float] | None = None,
        quality_check: QualityCheck = answer_problem,
        pii_entities: Iterable[PIIEntity] = PII_ENTITIES,
    ) -> None:
        given = {"fast": fast, "standard": standard, "reasoning": reasoning}
        self._tiers: dict[Tier, tuple[Model, ...]] = {}
        for tier in TIERS:
            models = given[tier]
            if models is None:
                continue
            group = (models,) if isinstance(models, Model) else tuple(models)
            if not group or not all(isinstance(m, Model) for m in group):
                raise ConfigError(f"Router tier {tier!r} must be a Model or a non-empty list of Models")
            self._tiers[tier] = group
        if not self._tiers:
            raise ConfigError(
                "a Router needs at least one tier: Router(fast=..., standard=..., reasoning=...)"
            )
        low, high = thresholds
        if not 0 <= low <= high <= 1:
            raise ConfigError(
                f"Router thresholds must be 0 <= fast/standard <= standard/reasoning <= 1; got {thresholds}"
            )
        self.thresholds = (float(low), float(high))
        self._private = (
            None if private is None else tuple(p.name if isinstance(p, Model) else p for p in private)
        )
        # sorted out once: a runtime-checkable Protocol's isinstance costs tens of µs per call
        self._price_list: PriceList | None = None
        self._price_map: Mapping[str, Any] = {}
        if isinstance(prices, Mapping):
            self._price_map = prices
        elif prices is not None:
            if not isinstance(prices, PriceList):
                raise ConfigError(
                    "prices must map model names to (input, output) USD per million tokens, or have a "
                    "cost(model, usage) method like tether.governance.PriceTable; "
                    f"got {type(prices).__name__}"
                )
            self._price_list = prices
        self.classifier = classifier
        for split in splits:
            if split.tier not in self._tiers:
                raise ConfigError(
                    f"split {split.name!r} divides tier {split.tier!r}, which has no model; configured: "
                    f"{', '.join(self._tiers)}"
                )
        self._splits = {s.tier: s for s in splits}
        if len(self._splits) != len(splits):
            raise ConfigError("a Router takes at most one split per tier")
        self.escalate = escalate
        self._deadlines = dict(deadlines or {})
        for tier, seconds in self._deadlines.items():
            if tier not in TIERS or seconds <= 0:
                raise ConfigError(f"deadline {tier!r}={seconds!r}: tiers are {', '.join(TIERS)}, seconds > 0")
        self._check = quality_check
        self._entities = tuple(pii_entities)

    @classmethod
    def from_config(cls, config: ModelsConfig, **kwargs: Any) -> Router:
        """A router over the tiered models of a models file: its tiers, privacy and prices.

        Args:
            config: the models file (`load_models(path)` or `configured_models()`).
            **kwargs: any other `Router` argument.

        Raises:
            ConfigError: no entry has a tier, or an entry cannot be built.
        """
        tiers: dict[str, list[Model]] = {}
        private: list[str] = []
        prices: dict[str, Any] = {}
        for entry in config:
            if entry.tier is None:
                continue
            model = entry.build()
            tiers.setdefault(entry.tier, []).append(model)
            if entry.private:
                private.append(model.name)
            if entry.price is not None:
                prices[model.name] = entry.price
        if not tiers:
            raise ConfigError(
                f'no model in {config.source or "the models config"} has a tier; give some `tier = "fast"`'
            )
        return cls(
            **tiers, private=kwargs.pop("private", private), prices=kwargs.pop("prices", prices), **kwargs
        )

    def fit(self, examples: Iterable[tuple[str, Tier]], embedder: Embedder | None = None) -> Router:
        """Train the tier classifier on `(request text, tier)` examples; returns the router.

        Raises:
            ConfigError: see `TierClassifier.fit`.
        """
        self.classifier = TierClassifier.fit(examples, embedder)
        return self

    @property
    def name(self) -> str:
        """`router(fast=..., standard=..., reasoning=...)` with the first model of each tier."""
        return "router(" + ", ".join(f"{t}={g[0].name}" for t, g in self._tiers.items()) + ")"

    @property
    def tiers(self) -> Mapping[Tier, tuple[Model, ...]]:
        """The models of each configured tier."""
        return dict(self._tiers)

    def is_private(self, model: Model) -> bool:
        """Whether requests sent to `model` stay on this host."""
        if self._private is None:
            return is_private_name(model.name)
        return any(fnmatch.fnmatchcase(model.name, p) for p in self._private)

    def estimate_cost(
        self,
        model: Model,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings,
        *,
        prompt_tokens: int | None = None,
    ) -> float | None:
        """The worst-case cost of the call in USD (the prompt and `max_tokens` of output); None: unpriced.

        Args:
            model: the model that would answer.
            messages: the conversation.
            tools: the tools offered.
            settings: the call's settings (`max_tokens`).
            prompt_tokens: the prompt's size when already estimated (4 characters a token otherwise).
        """
        if self._price_list is not None:
            tokens = prompt_tokens if prompt_tokens is not None else _estimate_tokens(messages, tools)
            usage = Usage(input_tokens=tokens, output_tokens=settings.max_tokens)
            try:
                return float(self._price_list.cost(model.name, usage))
            except ConfigError:
                return None
        prices = self._price_map
        price: Any = None
        if prices:
            price = prices.get(model.name)
            if price is None:
                globs = [
                    p for p in prices if any(c in p for c in "*?[") and fnmatch.fnmatchcase(model.name, p)
                ]
                price = prices[max(globs, key=len)] if globs else None
        if price is None:
            # the embedded model costs no money; sizing its prompt would cost time for nothing
            return 0.0 if is_private_name(model.name) else None
        rate_in, rate_out = price if isinstance(price, tuple) else (price.input, price.output)
        tokens = prompt_tokens if prompt_tokens is not None else _estimate_tokens(messages, tools)
        return (tokens * rate_in + settings.max_tokens * rate_out) / 1_000_000

    def route(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings = ModelSettings(),  # noqa: B008 - frozen dataclass, safe as a default
    ) -> Route:
        """Decide where a request goes without sending it (what `request` journals as `route`).

        Raises:
            ConfigError: a hint is unknown, or the request is sensitive and no private model is configured.
        """
        return self._decide(messages, tools, settings).route

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings = ModelSettings(),  # noqa: B008 - frozen dataclass, safe as a default
        on_token: TokenCallback | None = None,
    ) -> ModelResponse:
        """Route the request, ask the chosen model, and escalate a tier when its answer is not good enough.

        While a higher tier could still take over, tokens are passed to `on_token` only once the answer
        has passed the quality check (a refusal is never shown and then replaced).

        Raises:
            ConfigError: see `route`.
            ModelError: the last model tried failed.
        """
        started = time.perf_counter()
        decision = self._decide(messages, tools, settings)
        route = decision.route
        escalations: list[str] = []
        usage = Usage()
        for index, (tier, model) in enumerate(decision.chain):
            last = index == len(decision.chain) - 1
            call_settings = settings
            deadline = self._deadlines.get(tier)
            if not last and deadline is not None and deadline < settings.timeout_s:
                call_settings = replace(settings, timeout_s=deadline)
            pieces: list[str] = []
            try:
                response = await model.request(
                    messages,
                    tools=tools,
                    settings=call_settings,
                    on_token=on_token if last or on_token is None else pieces.append,
                )
            except ModelError as exc:
                if last:
                    raise
                escalations.append(f"{tier} {model.name}: {type(exc).__name__}: {exc.message[:160]}")
                continue
            usage = usage + response.usage
            problem = None if last else self._check(response, tools, settings)
            if problem is not None:
                escalations.append(f"{tier} {model.name}: {problem}")
                continue
            if on_token is not None and pieces:
                on_token("".join(pieces))
            if escalations:
                route = route.model_copy(
                    update={
                        "tier": tier,
                        "model": model.name,
                        "private": self.is_private(model),
                        "estimated_cost_usd": self.estimate_cost(model, messages, tools, settings),
                        "reason": f"{route.reason}; escalated to {tier}: " + "; ".join(escalations),
                        "escalations": tuple(escalations),
                    }
                )
            return response.model_copy(
                update={"route": route, "usage": usage, "duration_s": time.perf_counter() - started}
            )
        raise AssertionError("a routing chain always ends with a model that answers or raises")

    async def aclose(self) -> None:
        """Close every model of every tier and split (each once)."""
        seen: set[int] = set()
        for model in [
            *(m for g in self._tiers.values() for m in g),
            *(s.model for s in self._splits.values()),
        ]:
            if id(model) not in seen:
                seen.add(id(model))
                await model.aclose()

    # -- the decision ----------------------------------------------------------------------------

    def _decide(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition], settings: ModelSettings
    ) -> _Decision:
        sensitive = sensitive_reason(messages, settings, self._entities)
        complexity = estimate_complexity(messages, tools)
        wanted, why = self._wanted(messages, settings, complexity)
        reasons = [why]
        tier = self._nearest(wanted, sensitive is not None)
        if tier is None:
            raise ConfigError(
                f"the request is sensitive ({sensitive}) and no private model is configured, so it cannot be "
                f"sent anywhere; configured: {self._describe_tiers()}. Add a private model (the embedded "
                "local: model is private by default) or list one in Router(private=...)"
            )
        if sensitive is not None:
            reasons.append(f"sensitive ({sensitive}): private models only")
        if tier != wanted:
            kind = "private model" if sensitive is not None else "model"
            reasons.append(f"no {kind} in tier {wanted}: {tier}")
        key = settings.route_key or _first_user_text(messages)
        model, variant = self._pick(tier, sensitive is not None, key)
        cost = self.estimate_cost(model, messages, tools, settings)
        budget = settings.budget_usd
        if budget is not None:
            while cost is not None and cost > budget:
                lower = self._below(tier, sensitive is not None)
                if lower is None:
                    reasons.append(f"estimated ${cost:.6f} is over the ${budget:g} budget even on {tier}")
                    break
                reasons.append(
                    f"estimated ${cost:.6f} on {tier} is over the ${budget:g} budget: down to {lower}"
                )
                tier = lower
                model, variant = self._pick(tier, sensitive is not None, key)
                cost = self.estimate_cost(model, messages, tools, settings)
        if variant:
            reasons.append(f"split {variant}")
        chain: list[tuple[Tier, Model]] = [(tier, model)]
        if self.escalate:
            for higher in TIERS[TIERS.index(tier) + 1 :]:
                picked = self._eligible(higher, sensitive is not None)
                if not picked or any(m is picked[0] for _, m in chain):
                    continue
                extra = self.estimate_cost(picked[0], messages, tools, settings)
                if budget is not None and extra is not None and extra > budget:
                    continue
                chain.append((higher, picked[0]))
        route = Route(
            tier=tier,
            model=model.name,
            reason="; ".join(reasons),
            complexity=complexity.score,
            estimated_cost_usd=cost,
            variant=variant,
            sensitive=sensitive is not None,
            private=self.is_private(model),
        )
        return _Decision(route=route, chain=tuple(chain))

    def _wanted(
        self, messages: Sequence[Message], settings: ModelSettings, complexity: Complexity
    ) -> tuple[Tier, str]:
        unknown = [h for h in settings.hints if h not in HINTS]
        if unknown:
            raise ConfigError(f"unknown routing hints {unknown}; a Router understands {', '.join(HINTS)}")
        for tier in TIERS:
            if f"tier:{tier}" in settings.hints:
                return tier, f"hint tier:{tier}"
        if "reasoning" in settings.hints:
            return "reasoning", "hint reasoning"
        if "latency_critical" in settings.hints:
            return "fast", "hint latency_critical"
        text = _last_user_text(messages)
        if self.classifier is not None and text:
            tier, sims = self.classifier.predict(text)
            shown = ", ".join(f"{t} {s:.2f}" for t, s in sorted(sims.items(), key=lambda ts: -ts[1]))
            return tier, f"classifier: {tier} (similarity {shown}); complexity {complexity.describe()}"
        low, high = self.thresholds
        tier = "fast" if complexity.score < low else "standard" if complexity.score < high else "reasoning"
        return tier, f"complexity {complexity.describe()} -> {tier} (thresholds {low:g}/{high:g})"

    def _eligible(self, tier: Tier, sensitive: bool) -> tuple[Model, ...]:
        group = self._tiers.get(tier, ())
        return tuple(m for m in group if self.is_private(m)) if sensitive else group

    def _nearest(self, tier: Tier, sensitive: bool) -> Tier | None:
        """The tier itself when it has an eligible model; else the nearest that has, upwards first."""
        index = TIERS.index(tier)
        order = [tier, *TIERS[index + 1 :], *reversed(TIERS[:index])]
        return next((t for t in order if self._eligible(t, sensitive)), None)

    def _below(self, tier: Tier, sensitive: bool) -> Tier | None:
        return next((t for t in reversed(TIERS[: TIERS.index(tier)]) if self._eligible(t, sensitive)), None)

    def _pick(self, tier: Tier, sensitive: bool, key: str) -> tuple[Model, str]:
        eligible = self._eligible(tier, sensitive)
        split = self._splits.get(tier)
        if split is None:
            return eligible[0], ""
        if split.candidate(key) and (not sensitive or self.is_private(split.model)):
            return split.model, f"{split.name}:candidate"
        return eligible[0], f"{split.name}:control"

    def _describe_tiers(self) -> str:
        return ", ".join(
            f"{t}=[{', '.join(m.name + (' (private)' if self.is_private(m) else '') for m in g)}]"
            for t, g in self._tiers.items()
        )


def _first_user_text(messages: Sequence[Message]) -> str:
    return next((m.content for m in messages if isinstance(m, UserMessage)), "")
