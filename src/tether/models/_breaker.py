"""Circuit breakers: stop calling a provider (or a tool) that keeps failing, and try it again later.

A `CircuitBreaker` is generic: it guards any kind of call, by name. `CircuitBreakerModel` puts one in
front of a model; the runtime uses the same class for tools.

```
            failure_threshold failures within window_s
 closed ───────────────────────────────────────────────▶ open ◀──────────┐
   ▲                                                       │ open_s       │ a probe fails
   │ half_open_probes probes succeed                       ▼ passes       │
   └────────────────────────────────────────────────── half-open ─────────┘
                                         (at most half_open_probes calls let through)
```

While open, calls fail at once (`permit.allowed` is False; `CircuitBreakerModel` raises
`ModelCircuitOpen`, saying until when) instead of waiting on a provider that is down; a fallback model
answers meanwhile. A probe that never reports back (its worker died) is presumed lost after
`probe_timeout_s`, and another is let through.

The state lives in a `BreakerState`: `InMemoryBreakerState` for one process (the embedded default),
`tether.models.breakers.redis.RedisBreakerState` or `tether.models.breakers.postgres.PostgresBreakerState`
to share one breaker among every worker of a scale-out deployment. A backend only stores a versioned
record and replaces it if its version is unchanged (compare-and-set); the state machine is written once,
here, and every transition is one atomic compare-and-set, so concurrent workers never lose a failure nor
let more probes through than allowed. Shared backends read the time from their server, the one clock
all workers share.

A backend that cannot be reached does not stop calls: the breaker lets them through (it is a guard,
not a gate) and logs a warning, and `permit.degraded` says why.
"""

from __future__ import annotations

import abc
import collections
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import structlog

from .._clock import Clock, SystemClock
from ..exceptions import ConfigError, ModelCircuitOpen, ModelError, StoreError
from ._attempts import answered, attempts_failed, bounded_request, with_attempts
from ._base import Model, ModelSettings, TokenCallback
from ._messages import Attempt, Message, ModelResponse, ToolDefinition

__all__ = [
    "BreakerPermit",
    "BreakerPolicy",
    "BreakerRecord",
    "BreakerSnapshot",
    "BreakerState",
    "BreakerStateName",
    "BreakerTransition",
    "CircuitBreaker",
    "CircuitBreakerModel",
    "InMemoryBreakerState",
    "counts_as_failure",
]

_log = structlog.get_logger("tether.models.breaker")

BreakerStateName = Literal["closed", "open", "half_open"]

# The model's own timeout (settings.timeout_s) fires first, with its more precise message; a model that
# ignores it is stopped this much later, still inside the breaker, so that the timeout is counted.
_GUARD_GRACE_S = 0.1
_TIMEOUT_HINT = "raise settings.timeout_s or use a faster model"

# A compare-and-set loses only to another writer's successful one, so this many losses in a row means
# hundreds of workers hammering one breaker at once; the call then goes through as if the breaker
# were unreachable rather than spin.
_MAX_CAS_TRIES = 64


@dataclass(frozen=True, kw_only=True)
class BreakerPolicy:
    """When a breaker opens, how long it stays open, and how it closes again.

    Attributes:
        failure_threshold: this many failures within `window_s` open the breaker.
        window_s: the window failures are counted in (older ones are forgotten).
        open_s: how long the breaker stays open before letting probe calls through.
        half_open_probes: how many probe calls are let through at once when half-open; that many
            successes close the breaker, one failure opens it again for `open_s`.
        probe_timeout_s: a probe that has reported nothing after this long is presumed lost (its worker
            died) and another is let through. Defaults to `open_s`.
    """

    failure_threshold: int = 5
    window_s: float = 60.0
    open_s: float = 30.0
    half_open_probes: int = 1
    probe_timeout_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("failure_threshold", "half_open_probes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"BreakerPolicy.{name} must be at least 1; got {getattr(self, name)!r}")
        for name in ("window_s", "open_s", "probe_timeout_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"BreakerPolicy.{name} must be positive; got {value!r}")

    @property
    def probe_lost_after_s(self) -> float:
        return self.probe_timeout_s if self.probe_timeout_s is not None else self.open_s


@dataclass(frozen=True, kw_only=True)
class BreakerRecord:
    """A breaker's state as a backend stores it (JSON, a few hundred bytes).

    Attributes:
        state: `closed`, `open` or `half_open`.
        failures: wall times of the recent failures while closed (at most `failure_threshold`).
        open_until: while open, when probes may start.
        probes: probe calls let through in the current half-open period.
        probe_successes: of those, how many succeeded.
        probing_since: when the current half-open period (or its last lost-probe restart) began.
        reason: why the breaker last opened.
        times_opened: how many times it has opened, ever (for dashboards).
    """

    state: BreakerStateName = "closed"
    failures: tuple[float, ...] = ()
    open_until: float = 0.0
    probes: int = 0
    probe_successes: int = 0
    probing_since: float = 0.0
    reason: str = ""
    times_opened: int = 0

    def to_json(self) -> str:
        data = {
            "state": self.state,
            "failures": list(self.failures),
            "open_until": self.open_until,
            "probes": self.probes,
            "probe_successes": self.probe_successes,
            "probing_since": self.probing_since,
            "reason": self.reason,
            "times_opened": self.times_opened,
        }
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> BreakerRecord:
        data: dict[str, Any] = json.loads(text)
        data["failures"] = tuple(data.get("failures", ()))
        return cls(**data)


CLOSED = BreakerRecord()


@dataclass(frozen=True, kw_only=True)
class BreakerSnapshot:
    """A breaker's record as read, the version a write must match, and the backend's time.

    Attributes:
        record: the state (`BreakerRecord()`, closed, when none was stored yet).
        version: 0 when none was stored; a write succeeds only if this is still the stored version.
        now: wall time by the backend's clock (the server's, for a shared backend).
    """

    record: BreakerRecord
    version: int
    now: float


class BreakerState(abc.ABC):
    """Where circuit breakers keep their state: a versioned record per breaker name.

    Implementations: `InMemoryBreakerState` (one process), `RedisBreakerState` and
    `PostgresBreakerState` (shared by every worker). They store and compare; the state machine is
    `CircuitBreaker`'s.
    """

    @abc.abstractmethod
    async def read(self, key: str) -> BreakerSnapshot:
        """The breaker's record, its version and the time now.

        Raises:
            StoreUnavailable: a shared backend cannot be reached.
        """

    @abc.abstractmethod
    async def write(self, key: str, record: BreakerRecord, *, version: int) -> bool:
        """Replace the record if its version is still `version` (0: none stored); False if it is not.

        Raises:
            StoreUnavailable: a shared backend cannot be reached.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook, the in-memory state holds nothing
        """Release connections."""


class InMemoryBreakerState(BreakerState):
    """Breaker state in this process: the embedded default.

    Args:
        clock: the time source (a `tether.testing.FakeClock` in tests).
    """

    def __init__(self, *, clock: Clock | None = None):
        self._clock = clock or SystemClock()
        self._records: dict[str, tuple[int, BreakerRecord]] = {}
        # breakers may be used from several threads (a tool run in a worker thread); writes compare
        # and set under this lock
        self._lock = threading.Lock()

    async def read(self, key: str) -> BreakerSnapshot:
        version, record = self._records.get(key, (0, CLOSED))
        return BreakerSnapshot(record=record, version=version, now=self._clock.now())

    async def write(self, key: str, record: BreakerRecord, *, version: int) -> bool:
        with self._lock:
            current = self._records.get(key, (0, CLOSED))[0]
            if current != version:
                return False
            self._records[key] = (version + 1, record)
            return True


@dataclass(frozen=True, kw_only=True)
class BreakerPermit:
    """Whether one call may go ahead.

    Attributes:
        allowed: False while the breaker is open (or half-open with its probes in flight).
        state: the breaker's state when asked.
        probe: this call is a half-open probe; its outcome decides whether the breaker closes.
        open_until: when refused, the wall time at which probes may start.
        retry_after_s: when refused, how long until then.
        reason: when refused, why, in one line (for the error the caller raises).
        degraded: when the state backend could not be reached, why (the call is allowed).
    """

    allowed: bool
    state: BreakerStateName
    probe: bool = False
    open_until: float | None = None
    retry_after_s: float | None = None
    reason: str = ""
    degraded: str = ""


@dataclass(frozen=True, kw_only=True)
class BreakerTransition:
    """A breaker changed state (as seen by the process that made the change)."""

    breaker: str
    from_state: BreakerStateName
    to_state: BreakerStateName
    at: float
    reason: str = ""


_ALLOWED = BreakerPermit(allowed=True, state="closed")


@dataclass
class _Step:
    """What one transition function decided: the new record (None: unchanged) and its result."""

    record: BreakerRecord | None
    permit: BreakerPermit = field(default=_ALLOWED)
    reason: str = ""


class CircuitBreaker:
    """A circuit breaker for one provider, endpoint or tool (closed / open / half-open).

    Args:
        name: what it guards (a model's name such as `openai:gpt-4o-mini@https://api.openai.com/v1`, or
            `tool:send_email`); breakers with the same name on the same shared state are one breaker.
        policy: thresholds and durations.
        state: where the state is kept (default: in this process).
        on_transition: called with every transition this process makes (for metrics and logs).

    Attributes:
        transitions: the last 1,000 transitions this process made, oldest first.

    Example:
        ```python
        breaker = CircuitBreaker("tool:send_email", policy=BreakerPolicy(failure_threshold=3))
        permit = await breaker.acquire()
        if not permit.allowed:
            raise ToolError(f"send_email is failing: {permit.reason}")
        try:
            await send()
        except OSError as exc:
            await breaker.record_failure(str(exc))
            raise
        await breaker.record_success(permit)
        ```
    """

    def __init__(
        self,
        name: str,
        *,
        policy: BreakerPolicy | None = None,
        state: BreakerState | None = None,
        on_transition: Callable[[BreakerTransition], None] | None = None,
    ):
        if not name:
            raise ConfigError("a CircuitBreaker needs a non-empty name (the provider or tool it guards)")
        self.name = name
        self.policy = policy or BreakerPolicy()
        self.state = state if state is not None else InMemoryBreakerState()
        self.on_transition = on_transition
        self.transitions: collections.deque[BreakerTransition] = collections.deque(maxlen=1000)

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, policy={self.policy!r}, state={type(self.state).__name__})"

    async def acquire(self) -> BreakerPermit:
        """Ask whether a call may go ahead now; a half-open breaker counts the call as a probe."""
        step = await self._update(self._on_acquire, "checking")
        return step.permit if step is not None else _degraded_permit(self.name, "checking")

    async def record_success(self, permit: BreakerPermit) -> None:
        """Report that the call `permit` allowed succeeded.

        Only probes change anything (enough of them close a half-open breaker), so for a call let through
        while closed this costs nothing, not even a read of a shared backend.
        """
        if permit.probe:
            await self._update(self._on_success, "recording a success")

    async def record_failure(self, reason: str) -> None:
        """Report that a call failed in a way that says the provider is unhealthy.

        Args:
            reason: what went wrong (kept as the reason the breaker opened, shown in later refusals).
        """
        await self._update(lambda snap: self._on_failure(snap, reason), "recording a failure")

    async def status(self) -> BreakerRecord:
        """The breaker's current record (for dashboards and tests)."""
        return (await self.state.read(self.name)).record

    # -- the state machine ----------------------------------------------------------------------------

    def _on_acquire(self, snap: BreakerSnapshot) -> _Step:
        rec, now, policy = snap.record, snap.now, self.policy
        if rec.state == "closed":
            return _Step(None)
        if rec.state == "open":
            if now < rec.open_until:
                return _Step(None, self._refused(rec, now))
            probing = replace(rec, state="half_open", probes=1, probe_successes=0, probing_since=now)
            return _Step(probing, BreakerPermit(allowed=True, state="half_open", probe=True), "open_s passed")
        if rec.probes < policy.half_open_probes:
            return _Step(
                replace(rec, probes=rec.probes + 1),
                BreakerPermit(allowed=True, state="half_open", probe=True),
            )
        if now - rec.probing_since >= policy.probe_lost_after_s:
            # the probes let through have not reported for a whole probe timeout: presumed lost
            restarted = replace(rec, probes=1, probe_successes=0, probing_since=now)
            return _Step(restarted, BreakerPermit(allowed=True, state="half_open", probe=True))
        return _Step(None, self._refused(rec, now))

    def _on_success(self, snap: BreakerSnapshot) -> _Step:
        rec = snap.record
        if rec.state != "half_open":
            return _Step(None)
        successes = rec.probe_successes + 1
        if successes >= self.policy.half_open_probes:
            closed = BreakerRecord(times_opened=rec.times_opened)
            return _Step(closed, reason=f"{successes} probe call(s) succeeded")
        return _Step(replace(rec, probe_successes=successes))

    def _on_failure(self, snap: BreakerSnapshot, reason: str) -> _Step:
        rec, now, policy = snap.record, snap.now, self.policy
        if rec.state == "open":
            # a call let through before the breaker opened, failing late: it is open already
            return _Step(None)
        if rec.state == "half_open":
            why = f"a probe call failed: {reason}"
            reopened = replace(
                rec,
                state="open",
                open_until=now + policy.open_s,
                probes=0,
                probe_successes=0,
                reason=why,
                times_opened=rec.times_opened + 1,
            )
            return _Step(reopened, reason=why)
        recent = (*(t for t in rec.failures if now - t < policy.window_s), now)
        recent = recent[-policy.failure_threshold :]
        if len(recent) < policy.failure_threshold:
            return _Step(replace(rec, failures=recent))
        why = f"{len(recent)} failures within {policy.window_s:g}s, the last: {reason}"
        opened = BreakerRecord(
            state="open", open_until=now + policy.open_s, reason=why, times_opened=rec.times_opened + 1
        )
        return _Step(opened, reason=why)

    def _refused(self, rec: BreakerRecord, now: float) -> BreakerPermit:
        if rec.state == "open":
            reason = (
                f"circuit open for {self.name} until {_wall(rec.open_until)} "
                f"({max(0.0, rec.open_until - now):.1f}s from now) after {rec.reason}"
            )
            return BreakerPermit(
                allowed=False,
                state="open",
                open_until=rec.open_until,
                retry_after_s=max(0.0, rec.open_until - now),
                reason=reason,
            )
        retry_at = rec.probing_since + self.policy.probe_lost_after_s
        reason = (
            f"circuit half-open for {self.name}: {rec.probes} probe call(s) in flight decide whether it "
            f"closes (opened after {rec.reason})"
        )
        return BreakerPermit(
            allowed=False,
            state="half_open",
            open_until=retry_at,
            retry_after_s=max(0.0, retry_at - now),
            reason=reason,
        )

    async def _update(self, decide: Callable[[BreakerSnapshot], _Step], doing: str) -> _Step | None:
        """Apply one transition atomically (compare-and-set, re-read on conflict); None if unreachable."""
        try:
            for _ in range(_MAX_CAS_TRIES):
                snap = await self.state.read(self.name)
                step = decide(snap)
                if step.record is None:
                    return step
                if await self.state.write(self.name, step.record, version=snap.version):
                    if step.record.state != snap.record.state:
                        self._transitioned(snap.record.state, step.record.state, snap.now, step.reason)
                    return step
        except StoreError as exc:
            _log.warning(
                "circuit breaker state unreachable; letting calls through",
                breaker=self.name,
                doing=doing,
                error=str(exc),
            )
            return None
        _log.warning(
            "circuit breaker state contended; letting the call through", breaker=self.name, doing=doing
        )
        return None

    def _transitioned(self, old: BreakerStateName, new: BreakerStateName, at: float, reason: str) -> None:
        transition = BreakerTransition(breaker=self.name, from_state=old, to_state=new, at=at, reason=reason)
        self.transitions.append(transition)
        log = _log.warning if new == "open" else _log.info
        log("circuit breaker changed state", breaker=self.name, from_state=old, to_state=new, reason=reason)
        if self.on_transition is not None:
            self.on_transition(transition)


def _degraded_permit(name: str, doing: str) -> BreakerPermit:
    return BreakerPermit(
        allowed=True, state="closed", degraded=f"the state of breaker {name!r} was unreachable while {doing}"
    )


def _wall(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def counts_as_failure(exc: ModelError) -> bool:
    """Whether a model error says the provider is unhealthy: timeouts, 5xx, 429, dropped connections,
    cut-off answers (the retryable errors). A refused request (401, 404, too long a prompt) says the
    provider is up and answering, so it counts as a success."""
    return exc.retryable


class CircuitBreakerModel(Model):
    """A model behind a circuit breaker: calls fail fast with `ModelCircuitOpen` while it is open.

    Put it inside a `RetryModel` (`resilient()` does), so that every try passes the breaker and the
    tries stop as soon as it opens.

    Args:
        model: the model guarded.
        breaker: the breaker (share one among the models of one provider, or across workers through a
            shared `BreakerState`); default: a new in-memory one named after the model.
        failure_if: which errors count against the breaker (default `counts_as_failure`).
    """

    def __init__(
        self,
        model: Model,
        breaker: CircuitBreaker | None = None,
        *,
        failure_if: Callable[[ModelError], bool] = counts_as_failure,
    ):
        self.model = model
        self.breaker = breaker if breaker is not None else CircuitBreaker(model.name)
        self._failure_if = failure_if

    def __repr__(self) -> str:
        return f"CircuitBreakerModel({self.model!r}, breaker={self.breaker!r})"

    @property
    def name(self) -> str:
        return self.model.name

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings = ModelSettings(),  # noqa: B008 - frozen dataclass, safe as a default
        on_token: TokenCallback | None = None,
    ) -> ModelResponse:
        permit = await self.breaker.acquire()
        if not permit.allowed:
            raise _circuit_open(self.name, self.breaker.name, permit)
        started = time.perf_counter()
        try:
            response = await bounded_request(
                self.model, messages, tools, settings, on_token, grace_s=_GUARD_GRACE_S, hint=_TIMEOUT_HINT
            )
        except ModelError as exc:
            duration = time.perf_counter() - started
            if self._failure_if(exc):
                await self.breaker.record_failure(f"{type(exc).__name__}: {exc.message}")
            else:
                await self.breaker.record_success(permit)
            raise with_attempts(
                exc, attempts_failed(exc, model=self.name, duration_s=duration)
            ) from exc.__cause__
        await self.breaker.record_success(permit)
        return answered(response, model=self.name, duration_s=time.perf_counter() - started)

    async def aclose(self) -> None:
        await self.model.aclose()


def _circuit_open(model: str, breaker: str, permit: BreakerPermit) -> ModelCircuitOpen:
    open_until = permit.open_until if permit.open_until is not None else 0.0
    message = (
        f"{permit.reason}; {model} was not called. Calls fail fast until then: put a fallback model "
        "after it (FallbackModel) or wait"
    )
    error = ModelCircuitOpen(
        message, breaker=breaker, open_until=open_until, retry_after=permit.retry_after_s
    )
    error.attempts = (Attempt(model=model, outcome="circuit_open", error=message),)
    return error
