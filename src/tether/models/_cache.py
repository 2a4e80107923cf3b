"""Response caches: an exact one, and a semantic one over sentence embeddings.

```python
from tether.embeddings import MiniLMEmbedder
from tether.models import CachedModel, RedisCacheStore

model = CachedModel(router, embedder=MiniLMEmbedder(), similarity=0.9, ttl_s=3600)
# scale-out: every worker shares one cache
model = CachedModel(router, embedder=MiniLMEmbedder(), store=RedisCacheStore(url="redis://host:6379/0"))
```

What may be served from the cache, and to whom:

* Only deterministic calls (`temperature` 0) are stored, and only answers worth repeating: a final text
  that was not cut off, or tool calls whose arguments parsed.
* Sensitive requests (`ModelSettings.sensitive`, or personal data in a user or tool message) are never
  stored and never served: a cache is a copy of the data, and it may be shared between workers.
* Answers are shared only within a scope (`ModelSettings.cache_scope`: agent and tenant) and only for
  the same model, tools and output-affecting settings.
* The exact cache keys on the whole conversation (tool-call ids excepted: they differ between runs).
  The semantic cache applies when the conversation ends with a user message: everything before that
  message must be identical, the message itself need only be similar (cosine similarity of MiniLM
  embeddings at or above `similarity`) and hold the same numbers. The numbers rule is what keeps
  "status of order 1042" from being answered with order 1043's lookup: paraphrases rarely change a
  number, and a changed number almost always changes the answer.
* Entries expire after `ttl_s` (read through the injectable clock); stores hold at most `max_entries`
  and evict the least recently used.

A hit is marked on the response (`cache="exact"` or `"semantic"`, `cache_similarity`), with zero usage
(nothing was spent) and fresh tool-call ids (a call id must be unique within a run), so the journal
shows it.
"""

from __future__ import annotations

import abc
import collections
import hashlib
import json
import re
import struct
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any, Literal

import anyio.to_thread

from .._clock import Clock, SystemClock
from ..exceptions import ConfigError
from ..guardrails import PII_ENTITIES, PIIEntity
from ._base import Model, ModelSettings, TokenCallback
from ._hybrid import sensitive_reason
from ._messages import (
    AssistantMessage,
    Message,
    ModelResponse,
    ToolDefinition,
    ToolResultMessage,
    Usage,
    UserMessage,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import redis.asyncio as aioredis

    from ..embeddings import Embedder

__all__ = ["CacheEntry", "CacheStats", "CacheStore", "CachedModel", "MemoryCacheStore", "RedisCacheStore"]

_KEY_VERSION = 1  # part of every key: a change to what keys hold must not serve old entries
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


@dataclass(frozen=True, kw_only=True)
class CacheEntry:
    """One stored answer.

    Attributes:
        key: the exact key.
        response: the answer, as JSON (`ModelResponse.model_dump_json()`).
        expires_at: wall time after which it is not served; None: never expires.
        ttl_s: how long it lives, for stores that also expire entries themselves (Redis).
        partition: the semantic partition it is indexed in (None: exact only).
        vector: the embedding of the request's last user message (semantic entries).
    """

    key: str
    response: str
    expires_at: float | None = None
    ttl_s: float | None = None
    partition: str | None = None
    vector: npt.NDArray[np.float32] | None = field(default=None, compare=False)


class CacheStore(abc.ABC):
    """Where cached answers live: `MemoryCacheStore` (one process) or `RedisCacheStore` (every worker)."""

    @abc.abstractmethod
    async def get(self, key: str, now: float) -> CacheEntry | None:
        """The entry under `key` unless it expired by `now` (an expired one is deleted); marks it used."""

    @abc.abstractmethod
    async def put(self, entry: CacheEntry) -> None:
        """Store `entry` (replacing any under its key), evicting the least recently used beyond the bound."""

    @abc.abstractmethod
    async def nearest(
        self, partition: str, vector: npt.NDArray[np.float32], now: float
    ) -> tuple[str, float] | None:
        """The key of the unexpired entry of `partition` whose vector is most similar to `vector`, and the
        cosine similarity; None when the partition is empty."""

    @abc.abstractmethod
    async def clear(self) -> None:
        """Remove every entry."""

    async def forget(self, key: str, partition: str | None) -> None:  # noqa: B027 - optional hook
        """Drop `key` from its partition's index: `nearest` named it, but its entry is gone (a store that
        expires entries by itself, as Redis does, can leave such keys behind)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class MemoryCacheStore(CacheStore):
    """An in-process LRU store.

    Args:
        max_entries: the most entries held; the least recently used go first.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ConfigError(f"max_entries must be at least 1; got {max_entries!r}")
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[str, CacheEntry] = collections.OrderedDict()
        # per partition: the keys and their vectors as one matrix, rebuilt when the partition changes
        self._partitions: dict[str, dict[str, CacheEntry]] = {}
        self._matrices: dict[str, tuple[list[str], npt.NDArray[np.float32]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str, now: float) -> CacheEntry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at is not None and entry.expires_at <= now:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    async def put(self, entry: CacheEntry) -> None:
        if entry.key in self._entries:
            self._drop(entry.key)
        self._entries[entry.key] = entry
        if entry.partition is not None and entry.vector is not None:
            self._partitions.setdefault(entry.partition, {})[entry.key] = entry
            self._matrices.pop(entry.partition, None)
        while len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))

    async def nearest(
        self, partition: str, vector: npt.NDArray[np.float32], now: float
    ) -> tuple[str, float] | None:
        members = self._partitions.get(partition)
        if not members:
            return None
        cached = self._matrices.get(partition)
        if cached is None:
            import numpy as np

            keys = list(members)
            cached = self._matrices[partition] = (keys, np.stack([members[k].vector for k in keys]))  # type: ignore[misc]
        keys, matrix = cached
        sims = matrix @ vector
        for index in sims.argsort()[::-1]:
            entry = members.get(keys[index])
            if entry is not None and (entry.expires_at is None or entry.expires_at > now):
                return entry.key, float(sims[index])
        return None

    async def clear(self) -> None:
        self._entries.clear()
        self._partitions.clear()
        self._matrices.clear()

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None and entry.partition is not None:
            members = self._partitions.get(entry.partition)
            if members is not None:
                members.pop(key, None)
                self._matrices.pop(entry.partition, None)
                if not members:
                    del self._partitions[entry.partition]


class RedisCacheStore(CacheStore):
    """A store in Redis, shared by every worker: the same request is answered once for all of them.

    Layout under `prefix`: `e:<key>` a hash per entry (response, expiry, partition, vector); `p:<partition>`
    a hash of key -> vector per semantic partition; `lru` a sorted set of keys by last use. Redis also
    expires entries after `ttl_s` of real time, so a cache nobody reads does not grow forever; tether's own
    expiry check (through the clock) decides what is served.

    Args:
        url: the server (default `redis://127.0.0.1:6379/0`); or pass `client`.
        client: a `redis.asyncio.Redis` to use instead (not closed by `aclose`).
        prefix: prepended to every key this store writes.
        max_entries: the most entries held across all workers; the least recently used go first.

    Raises:
        ImportError: the `redis` package is not installed.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        client: aioredis.Redis | None = None,
        prefix: str = "tether:cache:",
        max_entries: int = 100_000,
    ) -> None:
        if find_spec("redis") is None:
            raise ImportError("install 'tether[redis]' to use RedisCacheStore")
        import redis.asyncio as aioredis

        if url is not None and client is not None:
            raise ConfigError("pass either url= or client= to RedisCacheStore, not both")
        if max_entries < 1:
            raise ConfigError(f"max_entries must be at least 1; got {max_entries!r}")
        self._url = url or "redis://127.0.0.1:6379/0"
        self._redis: aioredis.Redis = client or aioredis.Redis.from_url(self._url)
        self._owns = client is None
        self.prefix = prefix
        self.max_entries = max_entries

    async def get(self, key: str, now: float) -> CacheEntry | None:
        raw = await self._call("reading", self._redis.hgetall(self._entry_key(key)))
        if not raw:
            return None
        entry = _decode_entry(key, raw)
        if entry.expires_at is not None and entry.expires_at <= now:
            await self._delete([entry])
            return None
        await self._call("reading", self._redis.zadd(self.prefix + "lru", {key: time.time()}))
        return entry

    async def put(self, entry: CacheEntry) -> None:
        fields: dict[str, Any] = {"response": entry.response, "expires_at": repr(entry.expires_at)}
        if entry.partition is not None and entry.vector is not None:
            fields["partition"] = entry.partition
            fields["vector"] = entry.vector.astype("<f4").tobytes()
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(self._entry_key(entry.key), mapping=fields)
        # Redis's own expiry only reclaims memory; whether an entry is served is decided by `expires_at`,
        # read through the cache's clock (which may be a test's)
        ttl_ms = None if entry.ttl_s is None else max(1, int(entry.ttl_s * 1000))
        if ttl_ms is not None:
            pipe.pexpire(self._entry_key(entry.key), ttl_ms)
        if "vector" in fields:
            packed = struct.pack("<d", entry.expires_at if entry.expires_at is not None else float("inf"))
            pipe.hset(self._partition_key(entry.partition or ""), entry.key, packed + fields["vector"])
            if ttl_ms is not None:
                pipe.pexpire(self._partition_key(entry.partition or ""), ttl_ms)
        pipe.zadd(self.prefix + "lru", {entry.key: time.time()})
        pipe.zcard(self.prefix + "lru")
        results = await self._call("writing", pipe.execute())
        excess = int(results[-1]) - self.max_entries
        if excess > 0:
            popped = await self._call("evicting", self._redis.zpopmin(self.prefix + "lru", excess))
            evicted = []
            for member, _ in popped:
                key = member.decode() if isinstance(member, bytes) else str(member)
                partition = await self._call("evicting", self._redis.hget(self._entry_key(key), "partition"))
                evicted.append(
                    CacheEntry(key=key, response="", partition=partition.decode() if partition else None)
                )
            await self._delete(evicted)

    async def nearest(
        self, partition: str, vector: npt.NDArray[np.float32], now: float
    ) -> tuple[str, float] | None:
        import numpy as np

        raw = await self._call("searching", self._redis.hgetall(self._partition_key(partition)))
        if not raw:
            return None
        keys: list[str] = []
        rows = []
        for member, value in raw.items():
            (expires_at,) = struct.unpack("<d", value[:8])
            if expires_at > now:
                keys.append(member.decode() if isinstance(member, bytes) else str(member))
                rows.append(np.frombuffer(value[8:], dtype="<f4"))
        if not rows:
            return None
        sims = np.stack(rows) @ vector
        best = int(sims.argmax())
        return keys[best], float(sims[best])

    async def clear(self) -> None:
        """Delete every key under this store's prefix."""
        async for batch in self._scan():
            await self._call("clearing", self._redis.delete(*batch))

    async def forget(self, key: str, partition: str | None) -> None:
        await self._delete([CacheEntry(key=key, response="", partition=partition)])

    async def aclose(self) -> None:
        if self._owns:
            await self._redis.aclose()

    async def _scan(self) -> Any:
        batch: list[bytes] = []
        async for name in self._redis.scan_iter(match=self.prefix + "*", count=500):
            batch.append(name)
            if len(batch) >= 500:
                yield batch
                batch = []
        if batch:
            yield batch

    async def _delete(self, entries: Iterable[CacheEntry]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for entry in entries:
            pipe.delete(self._entry_key(entry.key))
            pipe.zrem(self.prefix + "lru", entry.key)
            if entry.partition is not None:
                pipe.hdel(self._partition_key(entry.partition), entry.key)
        await self._call("deleting", pipe.execute())

    def _entry_key(self, key: str) -> str:
        return f"{self.prefix}e:{key}"

    def _partition_key(self, partition: str) -> str:
        return f"{self.prefix}p:{partition}"

    async def _call(self, what: str, awaitable: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            raise ConfigError(
                f"the response cache's Redis at {self._url} failed while {what} ({exc}); start it "
                "(redis-server), point RedisCacheStore at a running server, or use MemoryCacheStore"
            ) from exc


def _decode_entry(key: str, raw: dict[bytes, bytes]) -> CacheEntry:
    import numpy as np

    expires = raw[b"expires_at"].decode()
    partition = raw.get(b"partition")
    vector = raw.get(b"vector")
    return CacheEntry(
        key=key,
        response=raw[b"response"].decode(),
        expires_at=None if expires == "None" else float(expires),
        partition=partition.decode() if partition else None,
        vector=np.frombuffer(vector, dtype="<f4") if vector else None,
    )


@dataclass
class CacheStats:
    """What a `CachedModel` did, since it was made.

    Attributes:
        exact_hits: answers served from the exact cache.
        semantic_hits: answers served from the semantic cache.
        misses: cacheable requests the model answered.
        bypassed: requests never looked up: sensitive, not deterministic, or with no user message.
        stored: answers stored.
        saved: the usage the hits would otherwise have cost.
    """

    exact_hits: int = 0
    semantic_hits: int = 0
    misses: int = 0
    bypassed: int = 0
    stored: int = 0
    saved: Usage = field(default_factory=Usage)

    @property
    def hit_rate(self) -> float:
        """Hits over lookups (bypassed requests are not lookups)."""
        lookups = self.exact_hits + self.semantic_hits + self.misses
        return (self.exact_hits + self.semantic_hits) / lookups if lookups else 0.0


class CachedModel(Model):
    """A model whose deterministic answers are cached, exactly and (with an embedder) semantically.

    See the module docstring for what is cached and served. Put it outside a `Router` so a hit skips
    routing too: `CachedModel(Router(...))`.

    Args:
        model: the model answering misses.
        store: where entries live; an in-memory LRU store of `max_entries` by default.
        embedder: turns the last user message into a vector for the semantic cache
            (`tether.embeddings.MiniLMEmbedder()`); None: exact cache only.
        similarity: the cosine similarity at or above which a cached request counts as the same.
        ttl_s: how long an answer is served; None: until evicted.
        max_entries: the bound of the default in-memory store.
        clock: where time is read (`tether.testing.FakeClock` in tests).
        pii_entities: the kinds of personal data that make a request sensitive (never cached).

    Attributes:
        stats: hits, misses and the usage saved.

    Raises:
        ConfigError: `similarity` or `ttl_s` is out of range.
    """

    def __init__(
        self,
        model: Model,
        *,
        store: CacheStore | None = None,
        embedder: Embedder | None = None,
        similarity: float = 0.9,
        ttl_s: float | None = 3600.0,
        max_entries: int = 10_000,
        clock: Clock | None = None,
        pii_entities: Iterable[PIIEntity] = PII_ENTITIES,
    ) -> None:
        if not 0 < similarity <= 1:
            raise ConfigError(f"similarity must be within (0, 1]; got {similarity!r}")
        if ttl_s is not None and ttl_s <= 0:
            raise ConfigError(f"ttl_s must be positive or None; got {ttl_s!r}")
        self.model = model
        self.store = store if store is not None else MemoryCacheStore(max_entries)
        self.embedder = embedder
        self.similarity = similarity
        self.ttl_s = ttl_s
        self._clock = clock or SystemClock()
        self._entities = tuple(pii_entities)
        self.stats = CacheStats()

    @property
    def name(self) -> str:
        """The wrapped model's name: a cache does not change who answers, and prices key on it."""
        return self.model.name

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings = ModelSettings(),  # noqa: B008 - frozen dataclass, safe as a default
        on_token: TokenCallback | None = None,
    ) -> ModelResponse:
        """Serve the answer from the cache when allowed and present; otherwise ask the model (and store)."""
        started = time.perf_counter()
        if settings.temperature != 0 or sensitive_reason(messages, settings, self._entities) is not None:
            self.stats.bypassed += 1
            return await self.model.request(messages, tools=tools, settings=settings, on_token=on_token)
        now = self._clock.now()
        key = exact_key(self.model.name, messages, tools, settings)
        hit = await self.store.get(key, now)
        similarity: float | None = None
        partition: str | None = None
        vector = None
        if hit is None and self.embedder is not None and messages and isinstance(messages[-1], UserMessage):
            partition = semantic_partition(self.model.name, self.embedder.name, messages, tools, settings)
            # ~5-30 ms of numpy: in a thread, so that other runs of this process go on meanwhile
            vector = (await anyio.to_thread.run_sync(self.embedder.embed, [messages[-1].content]))[0]
            found = await self.store.nearest(partition, vector, now)
            if found is not None and found[1] >= self.similarity:
                hit = await self.store.get(found[0], now)
                similarity = found[1] if hit is not None else None
                if hit is None:
                    await self.store.forget(found[0], partition)
        if hit is not None:
            return self._served(hit, similarity, on_token, started)
        self.stats.misses += 1
        response = await self.model.request(messages, tools=tools, settings=settings, on_token=on_token)
        if _storable(response):
            await self.store.put(
                CacheEntry(
                    key=key,
                    response=response.model_dump_json(),
                    expires_at=None if self.ttl_s is None else now + self.ttl_s,
                    ttl_s=self.ttl_s,
                    partition=partition,
                    vector=vector,
                )
            )
            self.stats.stored += 1
        return response

    async def aclose(self) -> None:
        """Close the wrapped model and the store."""
        await self.model.aclose()
        await self.store.aclose()

    def _served(
        self, entry: CacheEntry, similarity: float | None, on_token: TokenCallback | None, started: float
    ) -> ModelResponse:
        cached = ModelResponse.model_validate_json(entry.response)
        kind: Literal["exact", "semantic"] = "exact" if similarity is None else "semantic"
        if kind == "exact":
            self.stats.exact_hits += 1
        else:
            self.stats.semantic_hits += 1
        self.stats.saved = self.stats.saved + cached.usage
        calls = tuple(
            c.model_copy(update={"call_id": f"call_{uuid.uuid4().hex[:16]}"}) for c in cached.tool_calls
        )
        if on_token is not None and cached.text:
            on_token(cached.text)
        return cached.model_copy(
            update={
                "tool_calls": calls,
                "usage": Usage(),
                "duration_s": time.perf_counter() - started,
                "attempts": (),
                "cache": kind,
                "cache_similarity": None if similarity is None else round(similarity, 4),
            }
        )


def _storable(response: ModelResponse) -> bool:
    if response.cache is not None or response.finish_reason == "length":
        return False
    if response.tool_calls:
        return all(isinstance(c.arguments, dict) for c in response.tool_calls)
    return bool(response.text.strip())


def _output_settings(settings: ModelSettings) -> list[Any]:
    """The settings that change what the model says (not timeouts, routing hints or budgets)."""
    allowed = sorted(settings.allowed_tools) if settings.allowed_tools is not None else None
    return [settings.max_tokens, settings.temperature, settings.tool_choice, settings.seed, allowed]


def _canonical_messages(messages: Sequence[Message]) -> list[Any]:
    """The conversation with tool-call ids replaced by their order: ids differ between runs."""
    ids: dict[str, int] = {}
    out: list[Any] = []
    for message in messages:
        if isinstance(message, AssistantMessage):
            calls = [[ids.setdefault(c.call_id, len(ids)), c.name, c.arguments] for c in message.tool_calls]
            out.append(["assistant", message.content, calls])
        elif isinstance(message, ToolResultMessage):
            out.append(
                [
                    "tool",
                    ids.get(message.call_id, message.call_id),
                    message.name,
                    message.content,
                    message.is_error,
                ]
            )
        else:
            out.append([message.role, message.content])
    return out


def _digest(value: Any) -> str:
    raw = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def exact_key(
    model: str, messages: Sequence[Message], tools: Sequence[ToolDefinition], settings: ModelSettings
) -> str:
    """The exact-cache key: model, scope, conversation, tools and output-affecting settings."""
    return _digest(
        [
            _KEY_VERSION,
            "exact",
            model,
            settings.cache_scope,
            _canonical_messages(messages),
            [t.model_dump() for t in tools],
            _output_settings(settings),
        ]
    )


def semantic_partition(
    model: str,
    embedder: str,
    messages: Sequence[Message],
    tools: Sequence[ToolDefinition],
    settings: ModelSettings,
) -> str:
    """The partition whose entries a request may match semantically: everything but the wording of the
    last user message must be equal, its numbers included."""
    last = messages[-1].content if messages else ""
    return _digest(
        [
            _KEY_VERSION,
            "semantic",
            model,
            embedder,
            settings.cache_scope,
            _canonical_messages(messages[:-1]),
            [t.model_dump() for t in tools],
            _output_settings(settings),
            sorted(_NUMBER.findall(last)),
        ]
    )
