"""An idempotency key reused: with the same request it is a retry, with another it is a mistake.

The defined outcome (every store): a second submission with the same key and the same agent and input is
a retry and gets the first run's id, creating nothing; one with the same key but another agent or input
is refused with `ConfigError` naming the key and the run it was first used for, creating nothing (as an
HTTP API refuses a reused idempotency key with other parameters), instead of silently answering with a
run that does something else.

The refusal needs `Store.enqueue` to compare the submission with the key's run (proposed in the faults3
report); until the stores do, those tests are strict xfails, so they start failing the day it lands and
the marker must go.
"""

from __future__ import annotations

import pytest

from tether.exceptions import ConfigError
from tether.journal import RunStarted, Store

pytestmark = pytest.mark.anyio

def started(agent: str = "support", run_input: str = "refund order 1042") -> RunStarted:
    return RunStarted(at=1.0, agent=agent, input=run_input, model="test:m", instructions="")


async def test_the_same_key_with_the_same_request_is_a_retry(store: Store) -> None:
    first = await store.enqueue("r1", started(), idempotency_key="order-1042")
    assert await store.enqueue("r2", started(), idempotency_key="order-1042") == first == "r1"
    assert [r.run_id for r in await store.list_runs()] == ["r1"]


async def test_the_same_key_with_another_input_is_refused_naming_the_key_and_the_run(store: Store) -> None:
    await store.enqueue("r1", started(), idempotency_key="order-1042")
    with pytest.raises(ConfigError) as caught:
        await store.enqueue("r2", started(run_input="refund order 7"), idempotency_key="order-1042")
    message = str(caught.value)
    assert "'order-1042'" in message and "'r1'" in message and "another input" in message
    assert [r.run_id for r in await store.list_runs()] == ["r1"]  # nothing was created


async def test_the_same_key_for_another_agent_is_refused(store: Store) -> None:
    await store.enqueue("r1", started(), idempotency_key="order-1042")
    with pytest.raises(ConfigError, match=r"'order-1042'.*'r1'"):
        await store.enqueue("r2", started(agent="billing"), idempotency_key="order-1042")
    assert [r.run_id for r in await store.list_runs()] == ["r1"]
