"""`Worker`: claims queued runs from a store, holds them with leases, and drives them to the end.

What a worker promises:
- A run is driven by one worker at a time. The store grants it a lease; the worker renews the lease
  with heartbeats at a third of its length, so one missed heartbeat does not lose the run. A worker
  that dies stops renewing, and once its leases expire other workers claim its runs and resume them
  from their journals (recorded model responses and tool results are reused, not repeated).
- A worker that only stalled (a long pause, SIGSTOP, a partition) and comes back after its run was
  taken over can write nothing more to it: every append presents the lease, and the store refuses a
  lease the run has moved on from (`LeaseLost`). The worker then drops the run quietly; it is not failed.
- On SIGTERM or SIGINT (`drain()`), it stops claiming, lets every run finish the step it is in (the
  model call and its tool calls, all journaled), hands the runs back to the queue and exits. A second
  signal (or cancelling `run()`) stops at once: what was journaled stays, the step in flight is redone
  by the next holder, and the runs go back to the queue (or, if the store cannot be reached, move when
  their leases expire). A run is never journaled as cancelled because its worker stopped.
- The store going away (PostgreSQL restarting, a dropped connection, a locked SQLite file) is retried
  with capped exponential backoff and logged, and nothing is lost when it returns: a journal write that
  failed is retried in place until the store takes it (so the outcome of a tool that has just run is
  recorded, not left in doubt), unless the run was taken over meanwhile; a run that could not be loaded
  is resumed from its journal by the same worker, or by another if its lease lapsed meanwhile.
- A run this worker cannot run (its journal has a row that does not parse, the worker crashed on it) is
  given up, not retried in a loop: it goes back to the queue after a delay that doubles with each
  attempt, and after `max_attempts` attempts by this worker it is ended `failed` with the reason.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc

from .._clock import Clock, SystemClock
from ..exceptions import ConfigError, JournalConflict, LeaseLost, RunNotFound, StoreError
from ..governance import Governance
from ..journal import TERMINAL_STATUSES, Event, Lease, RunFinished, RunInfo, RunStarted, Store, StoredEvent
from ..models import Usage
from ..runtime import Runner
from ..telemetry import get_logger

__all__ = ["Worker", "WorkerStats"]

_log = get_logger("tether.workers")


@dataclass
class WorkerStats:
    """What a worker has done since it started.

    Attributes:
        claimed: leases taken (a run claimed again after a hand-back counts again).
        finished: runs that reached a terminal status in this worker.
        handed_back: runs released unfinished (the worker was draining).
        lost: runs another worker took over while this one held them.
        errors: runs released after an error this worker could not get past (the agent cannot be
            imported here, a damaged journal), to be retried later.
        store_retries: store calls that failed and were retried after a backoff.
        given_up: runs this worker ended `failed` after `max_attempts` attempts it could not get past.
    """

    claimed: int = 0
    finished: int = 0
    handed_back: int = 0
    lost: int = 0
    errors: int = 0
    store_retries: int = 0
    given_up: int = 0


class _Backoff:
    """Capped exponential backoff with jitter, so many workers do not retry in step."""

    def __init__(self, first_s: float, cap_s: float):
        self.first_s, self.cap_s = first_s, cap_s
        self.failures = 0

    def next(self) -> float:
        delay = min(self.cap_s, self.first_s * 2**self.failures)
        self.failures += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.failures = 0


@dataclass
class _Held:
    """One run this worker holds."""

    lease: Lease
    lost: bool = False
    released: bool = False


class _PatientStore(Store):
    """The store as the runs of one worker write to it: a journal write the store cannot take now is
    retried in place, with backoff, until it goes in.

    Giving up on the write instead would throw away what the run knows and resume it from its journal:
    the outcome of a tool that had just run would be missing there, and a tool that is not idempotent
    would then be in doubt (not re-run, reported as unknown). Retried, the outcome is recorded once the
    store is back. The wait ends early when the run is lost (a heartbeat found it taken over): the write
    could only be refused. Every other call goes straight to the store.

    A write whose connection died while it was committing may have gone in: the retry then meets its
    own events (`JournalConflict`), which is recognised by comparing the journal's tail with them.
    """

    def __init__(
        self,
        store: Store,
        *,
        max_backoff_s: float,
        lost: Callable[[Lease], bool],
        stats: WorkerStats,
        log: Any,
    ) -> None:
        self.inner = store
        self._max_backoff_s = max_backoff_s
        self._lost = lost
        self._stats = stats
        self._log = log

    async def append(
        self, run_id: str, events: Sequence[Event], *, expected_seq: int, lease: Lease | None = None
    ) -> int:
        backoff = _Backoff(0.1, self._max_backoff_s)
        failures = 0
        while True:
            try:
                seq = await self.inner.append(run_id, events, expected_seq=expected_seq, lease=lease)
            except JournalConflict:
                if not (failures and await self._landed(run_id, events, expected_seq)):
                    raise
                seq = expected_seq + len(events)
            except StoreError as exc:
                if not exc.retryable or (lease is not None and self._lost(lease)):
                    raise
                failures += 1
                delay = backoff.next()
                self._stats.store_retries += 1
                self._log.warning(
                    "journal write failed, the store is unavailable; retrying the write",
                    run_id=run_id,
                    attempt=failures,
                    error=str(exc),
                    retry_in_s=round(delay, 2),
                )
                await anyio.sleep(delay)
                continue
            if failures:
                self._log.info("journal write went through after retries", run_id=run_id, retries=failures)
            return seq

    async def _landed(self, run_id: str, events: Sequence[Event], expected_seq: int) -> bool:
        """Whether the journal holds exactly `events` from `expected_seq` on (an earlier try committed)."""
        try:
            stored = await self.inner.load(run_id)
        except StoreError:
            return False  # the caller reports the conflict; the run resumes from its journal
        tail = stored[expected_seq : expected_seq + len(events)]
        return len(tail) == len(events) and all(
            s.event.model_dump_json() == ev.model_dump_json() for s, ev in zip(tail, events, strict=True)
        )

    # -- the rest of the contract, unchanged ---------------------------------------------------------

    async def create_run(self, run_id: str, started: RunStarted, *, history: Sequence[Event] = ()) -> None:
        await self.inner.create_run(run_id, started, history=history)

    async def enqueue(
        self,
        run_id: str,
        started: RunStarted,
        *,
        idempotency_key: str | None = None,
        history: Sequence[Event] = (),
    ) -> str:
        return await self.inner.enqueue(run_id, started, idempotency_key=idempotency_key, history=history)

    async def claim(self, worker_id: str, *, lease_s: float) -> Lease | None:
        return await self.inner.claim(worker_id, lease_s=lease_s)

    async def renew(self, lease: Lease) -> Lease:
        return await self.inner.renew(lease)

    async def release(self, lease: Lease, *, delay_s: float = 0.0) -> bool:
        return await self.inner.release(lease, delay_s=delay_s)

    async def seize(self, run_id: str, worker_id: str, *, lease_s: float) -> Lease:
        return await self.inner.seize(run_id, worker_id, lease_s=lease_s)

    async def load(self, run_id: str) -> list[StoredEvent]:
        return await self.inner.load(run_id)

    async def get_run(self, run_id: str) -> RunInfo:
        return await self.inner.get_run(run_id)

    async def list_runs(
        self,
        *,
        status: str | None = None,
        agent: str | None = None,
        limit: int = 50,
        updated_before: float | None = None,
    ) -> list[RunInfo]:
        return await self.inner.list_runs(
            status=status, agent=agent, limit=limit, updated_before=updated_before
        )

    async def verify(self, run_id: str) -> list[str]:
        return await self.inner.verify(run_id)

    async def delete(self, run_id: str) -> None:
        await self.inner.delete(run_id)

    def __repr__(self) -> str:
        return repr(self.inner)


class Worker:
    """Claims runnable runs from `store` and runs them, `concurrency` at a time.

    Args:
        store: the store to claim from (PostgreSQL for workers on many hosts; SQLite for processes on
            one host). The worker uses it; the caller closes it.
        concurrency: runs driven at once by this worker.
        lease_s: how long a claim holds a run without a heartbeat. A dead worker's runs are resumed
            elsewhere after at most this long; heartbeats go every `lease_s / 3`.
        poll_s: how long an idle worker waits before looking for work again.
        worker_id: how this worker is named in leases and logs (default: host:pid:random).
        retry_delay_s: how long a run this worker could not run (its agent does not import here, its
            journal is damaged) stays out of the queue before a worker tries it again. For a damaged
            run it doubles with each further attempt this worker makes (up to 32 times as long).
        max_attempts: how many times this worker tries a run it cannot get past (a journal row that does
            not parse, a crash in the worker) before it ends the run `failed` with the reason, so that one
            poison run cannot occupy the workers forever. A run whose agent cannot be imported here is
            never failed for that (a deploy may fix it); it is kept back `retry_delay_s` each time.
        max_backoff_s: the longest wait between retries while the store is unavailable.
        clock: the time source (a fake in tests).
        governance: the kill switch, budgets, rate limits and prices every run is checked against at each
            step; share its backend (Redis or PostgreSQL) between workers so that they enforce one set of
            limits. The worker uses it; the caller closes it.
    """

    def __init__(
        self,
        store: Store,
        *,
        concurrency: int = 4,
        lease_s: float = 30.0,
        poll_s: float = 0.5,
        worker_id: str | None = None,
        retry_delay_s: float = 30.0,
        max_attempts: int = 5,
        max_backoff_s: float = 10.0,
        clock: Clock | None = None,
        governance: Governance | None = None,
    ):
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"Worker concurrency must be a whole number of at least 1; got {concurrency!r}")
        for name, value in (("lease_s", lease_s), ("poll_s", poll_s), ("max_backoff_s", max_backoff_s)):
            if not value > 0:
                raise ConfigError(f"Worker {name} must be a positive number of seconds; got {value!r}")
        if retry_delay_s < 0:
            raise ConfigError(f"Worker retry_delay_s must be 0 or more; got {retry_delay_s!r}")
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise ConfigError(
                f"Worker max_attempts must be a whole number of at least 1; got {max_attempts!r}"
            )
        self.store = store
        self.concurrency = concurrency
        self.lease_s = float(lease_s)
        self.poll_s = float(poll_s)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.retry_delay_s = retry_delay_s
        self.max_attempts = max_attempts
        self.max_backoff_s = max_backoff_s
        self.clock: Clock = clock or SystemClock()
        self.stats = WorkerStats()
        # attempts this worker made at runs it could not get past, by run (cleared when one goes through)
        self._attempts: dict[str, int] = {}
        # keyed by (run, epoch): a worker that stalled past its own lease may claim the same run again,
        # and then holds it twice, the older hold fenced out
        self._held: dict[tuple[str, int], _Held] = {}
        self._draining = False
        self._wake: anyio.Event | None = None
        self._runs_scope: anyio.CancelScope | None = None
        self._log = _log.bind(worker_id=self.worker_id)
        self._journal = _PatientStore(
            store, max_backoff_s=max_backoff_s, lost=self._is_lost, stats=self.stats, log=self._log
        )
        self._runner = Runner(self._journal, clock=self.clock, governance=governance)

    @property
    def in_flight(self) -> list[str]:
        """The ids of the runs this worker holds now."""
        return [run_id for run_id, _ in self._held]

    def drain(self) -> None:
        """Stop claiming; let each run finish its current step, hand it back, and end `run()`."""
        if not self._draining:
            self._draining = True
            self._log.info(
                "draining: no new claims; in-flight runs stop after their current step",
                in_flight=len(self._held),
            )
        if self._wake is not None:
            self._wake.set()

    def stop_now(self) -> None:
        """Stop without finishing the steps in flight; they are redone by the runs' next holders.

        Nothing journaled is lost, the runs are not marked cancelled, and each goes back to the queue.
        """
        self.drain()
        if self._runs_scope is not None:
            self._runs_scope.cancel()

    async def run(self, *, handle_signals: bool = False) -> WorkerStats:
        """Claim and run runs until `drain()` (or, with `handle_signals`, SIGTERM or SIGINT).

        Cancelling the task that runs this stops the worker at once, as a second signal does.

        Args:
            handle_signals: drain on the first SIGTERM or SIGINT; stop at once on a second (the
                `tether worker` command). Needs the main thread.

        Returns:
            What the worker did.

        Raises:
            StoreError: the store refused the worker in a way waiting cannot fix (wrong password,
                missing privileges); the message says what to change. In-flight runs are drained first.
        """
        self._log.info(
            "worker started", store=repr(self.store), concurrency=self.concurrency, lease_s=self.lease_s
        )
        refused: Exception | None = None
        async with anyio.create_task_group() as outer:
            if handle_signals:
                outer.start_soon(self._watch_signals)
            async with anyio.create_task_group() as runs:
                self._runs_scope = runs.cancel_scope
                refused = await self._claim_loop(runs)
            outer.cancel_scope.cancel()
        self._log.info("worker stopped", **vars(self.stats))
        if refused is not None:
            raise refused
        return self.stats

    # -- claiming -------------------------------------------------------------------------------------

    async def _claim_loop(self, runs: anyio.abc.TaskGroup) -> Exception | None:
        """Claim until draining; returns the error that made the worker stop, if one did."""
        slots = anyio.Semaphore(self.concurrency)
        backoff = _Backoff(0.1, self.max_backoff_s)
        outage_since: float | None = None
        while not self._draining:
            await slots.acquire()
            if self._draining:
                slots.release()
                break
            try:
                lease = await self.store.claim(self.worker_id, lease_s=self.lease_s)
            except StoreError as exc:
                slots.release()
                if not exc.retryable:
                    # raised once the runs in flight are drained: raising here would cancel them
                    self._log.error("the store refused this worker; draining and stopping", error=str(exc))
                    self.drain()
                    return exc
                if outage_since is None:
                    outage_since = self.clock.monotonic()
                delay = backoff.next()
                self.stats.store_retries += 1
                self._log.warning(
                    "store unavailable; no runs can be claimed, retrying",
                    error=str(exc),
                    retry_in_s=round(delay, 2),
                )
                await self._pause(delay)
                continue
            except Exception as exc:
                # a bug, not an outage: stop claiming, but let the runs in flight finish their steps
                slots.release()
                self._log.exception("claiming failed unexpectedly; draining and stopping")
                self.drain()
                return exc
            if outage_since is not None:
                self._log.info(
                    "store reachable again", down_s=round(self.clock.monotonic() - outage_since, 2)
                )
                outage_since = None
            backoff.reset()
            if lease is None:
                slots.release()
                # jitter: idle workers started together must not poll the store in lockstep
                await self._pause(self.poll_s * random.uniform(0.8, 1.2))
                continue
            self.stats.claimed += 1
            held = _Held(lease)
            self._held[lease.run_id, lease.epoch] = held
            runs.start_soon(self._work, held, slots, name=f"tether run {lease.run_id}")
        return None

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once on `drain()`."""
        self._wake = anyio.Event()
        if self._draining:
            return
        with anyio.move_on_after(seconds):
            await self._wake.wait()

    # -- one run --------------------------------------------------------------------------------------

    async def _work(self, held: _Held, slots: anyio.Semaphore) -> None:
        key = (held.lease.run_id, held.lease.epoch)
        log = self._log.bind(run_id=held.lease.run_id, epoch=held.lease.epoch)
        log.info("run claimed")
        delay_s = 0.0
        try:
            async with anyio.create_task_group() as tg:
                # the clocks are read here, not when the heartbeat task first runs: that may be after
                # the run's first steps, and a jump during them would go unnoticed
                tg.start_soon(self._heartbeat, held, log, self.clock.now(), self.clock.monotonic())
                delay_s = await self._execute(held, log)
                tg.cancel_scope.cancel()
        finally:
            # also when stopped at once (cancelled): the run goes back to the queue now rather than
            # when its lease expires; bounded, since a store that is down would otherwise hold us here
            if not held.lost and not held.released:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    await self._release(held, log, delay_s)
            del self._held[key]
            slots.release()

    async def _execute(self, held: _Held, log: Any) -> float:
        """Drive the run until it ends, is handed back or is lost; returns the delay to release it with."""
        run_id = held.lease.run_id
        backoff = _Backoff(0.2, self.max_backoff_s)

        def stop() -> bool:
            return self._draining or held.lost

        while True:
            try:
                result = await self._runner.resume(run_id, lease=held.lease, stop=stop)
            except LeaseLost as exc:
                held.lost = True
                self.stats.lost += 1
                log.warning("another worker took the run over; dropped here", reason=str(exc))
                return 0.0
            except ConfigError as exc:
                # the agent cannot be loaded in this process (not installed here, an import error):
                # another worker, or this one after a deploy, may be able to, so it is never failed for it
                self.stats.errors += 1
                log.error(
                    "cannot run this run here; released for a later retry",
                    error=str(exc),
                    retry_in_s=self.retry_delay_s,
                )
                return self.retry_delay_s
            except StoreError as exc:
                if held.lost:
                    return 0.0
                if exc.retryable and not self._draining:
                    delay = backoff.next()
                    self.stats.store_retries += 1
                    log.warning(
                        "store error while running; resuming the run from its journal after a pause",
                        error=str(exc),
                        retry_in_s=round(delay, 2),
                    )
                    await anyio.sleep(delay)
                    continue
                if exc.retryable or isinstance(exc, RunNotFound):
                    # draining while the store is down, or the run deleted: nothing is wrong with the run
                    self.stats.errors += 1
                    log.error(
                        "store error; the run is released for a later retry",
                        error=str(exc),
                        retry_in_s=self.retry_delay_s,
                    )
                    return self.retry_delay_s
                # the run itself is damaged (a journal row that does not parse): every attempt fails alike
                return await self._cannot_run(held, log, "its journal cannot be read", str(exc))
            except Exception as exc:
                # the runner journals a crash as the run's failure where it can; if it could not, the run
                # is still open and would crash the next worker the same way
                with anyio.CancelScope(shield=True):
                    ended = await self._terminal(run_id)
                if ended:
                    self.stats.errors += 1
                    log.error(
                        "run crashed in this worker; its journal records it failed",
                        error=f"{type(exc).__name__}: {exc}",
                        exc_info=True,
                    )
                    return 0.0
                return await self._cannot_run(
                    held, log, "the worker crashed on it", f"{type(exc).__name__}: {exc}", exc_info=True
                )
            self._attempts.pop(run_id, None)
            if result.status in TERMINAL_STATUSES:
                self.stats.finished += 1
                log.info("run finished", status=result.status, steps=result.steps)
            elif held.lost:
                self.stats.lost += 1
                log.warning("another worker took the run over; dropped here between steps")
            else:
                self.stats.handed_back += 1
                log.info("run handed back unfinished", steps=result.steps)
            return 0.0

    def _attempted(self, run_id: str) -> int:
        """Count one more attempt at a run this worker could not get past; returns the count."""
        attempt = self._attempts[run_id] = self._attempts.get(run_id, 0) + 1
        return attempt

    def _retry_delay(self, attempt: int) -> float:
        """How long a run stays out of the queue after this worker's `attempt`-th failed attempt at it."""
        return self.retry_delay_s * 2 ** min(attempt - 1, 5)

    async def _terminal(self, run_id: str) -> bool:
        try:
            return (await self.store.get_run(run_id)).terminal
        except StoreError:
            return False

    async def _cannot_run(
        self, held: _Held, log: Any, why: str, error: str, *, exc_info: bool = False
    ) -> float:
        """Give a run this worker cannot get past back for a later attempt, or, at `max_attempts`, end it
        `failed`; returns the delay to release it with."""
        run_id = held.lease.run_id
        attempt = self._attempted(run_id)
        self.stats.errors += 1
        if attempt < self.max_attempts:
            delay = self._retry_delay(attempt)
            log.error(
                f"cannot run this run: {why}; released for a later attempt",
                error=error,
                attempt=attempt,
                max_attempts=self.max_attempts,
                retry_in_s=delay,
                exc_info=exc_info,
            )
            return delay
        reason = f"given up after {attempt} attempts: {why}: {error}"
        log.error(
            f"cannot run this run: {why}; giving up, the run is ended failed",
            error=error,
            attempt=attempt,
            max_attempts=self.max_attempts,
            exc_info=exc_info,
        )
        try:
            with anyio.CancelScope(shield=True):
                ended = await self._end_failed(held.lease, reason)
        except LeaseLost as exc:
            held.lost = True
            self.stats.lost += 1
            log.warning(
                "another worker took the run over before it could be ended; dropped here", reason=str(exc)
            )
            return 0.0
        except StoreError as exc:
            delay = self._retry_delay(attempt)
            log.error(
                "could not end the run failed; released for a later attempt", error=str(exc), retry_in_s=delay
            )
            return delay
        self._attempts.pop(run_id, None)
        if ended:
            self.stats.given_up += 1
        return 0.0

    async def _end_failed(self, lease: Lease, reason: str) -> bool:
        """Append the run's end, `failed` for `reason`, under the lease; False if it had ended already.

        Only the run's summary is read, never its events: they may be what cannot be read.
        """
        info = await self.store.get_run(lease.run_id)
        if info.terminal:
            return False
        finished = RunFinished(
            at=self.clock.now(),
            status="failed",
            reason=reason,
            output=None,
            steps=info.steps,
            usage=Usage(input_tokens=info.input_tokens, output_tokens=info.output_tokens),
        )
        await self.store.append(lease.run_id, [finished], expected_seq=info.event_count, lease=lease)
        return True

    def _is_lost(self, lease: Lease) -> bool:
        held = self._held.get((lease.run_id, lease.epoch))
        return held is None or held.lost

    async def _heartbeat(self, held: _Held, log: Any, wall: float, mono: float) -> None:
        # at a third of the TTL, so one missed heartbeat does not lose the run
        interval = held.lease.lease_s / 3
        while True:
            await anyio.sleep(interval)
            now_wall, now_mono = self.clock.now(), self.clock.monotonic()
            jump = (now_wall - wall) - (now_mono - mono)
            if abs(jump) > interval:
                # Leases are judged by the store's clock: on SQLite that is this host's, and a jump makes
                # leases expire early (forward: a takeover, which fencing keeps safe) or late (back).
                log.warning(
                    "the wall clock jumped; leases on this host's clock expire early or late by as much",
                    jump_s=round(jump, 3),
                )
            wall, mono = now_wall, now_mono
            try:
                held.lease = await self.store.renew(held.lease)
            except LeaseLost as exc:
                held.lost = True
                log.warning(
                    "heartbeat: the lease was taken over; the run stops at its next write", reason=str(exc)
                )
                return
            except StoreError as exc:
                self.stats.store_retries += 1
                log.warning(
                    "heartbeat failed; retrying at the next beat (the lease holds until it expires)",
                    error=str(exc),
                    expires_at=held.lease.expires_at,
                )

    async def _release(self, held: _Held, log: Any, delay_s: float) -> None:
        try:
            released = await self.store.release(held.lease, delay_s=delay_s)
        except StoreError as exc:
            log.warning(
                "could not release the run; another worker takes it when the lease expires",
                error=str(exc),
                lease_s=held.lease.lease_s,
            )
            return
        held.released = True
        if not released:
            log.info("lease already gone at release")

    # -- signals --------------------------------------------------------------------------------------

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if not self._draining:
                    self._log.info("signal received; draining", signal=signal.Signals(signum).name)
                    self.drain()
                    continue
                self._log.warning(
                    "second signal: stopping now; the steps in flight are redone by the runs' next holders",
                    signal=signal.Signals(signum).name,
                    in_flight=len(self._held),
                )
                self.stop_now()
