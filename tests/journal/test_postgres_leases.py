"""The PostgreSQL queue under real concurrency: the lock protocol between claims and leased appends."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator

import anyio
import psycopg
import pytest

from tether.exceptions import LeaseLost
from tether.journal import RunStarted, UsageCharged
from tether.journal.stores.postgres import PostgresStore
from tether.models import Usage

pytestmark = pytest.mark.anyio

# the server the `pg_schema` fixture checks, read as tests/conftest.py reads it (importing it by name is
# ambiguous once several test directories have a conftest.py)
POSTGRES_DSN = os.environ.get("TETHER_TEST_POSTGRES", "host=127.0.0.1 port=5432 dbname=test user=root")


def started() -> RunStarted:
    return RunStarted(at=1.0, agent="a", input="hi", model="test:m", instructions="")


def charged() -> UsageCharged:
    return UsageCharged(at=2.0, step=1, model="test:m", usage=Usage(input_tokens=1, output_tokens=1))


@pytest.fixture
async def pg(pg_schema: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(POSTGRES_DSN, schema=pg_schema, max_size=4)
    try:
        yield store
    finally:
        await store.aclose()


async def test_an_append_racing_a_takeover_waits_for_it_and_is_refused(
    pg: PostgresStore, pg_schema: str
) -> None:
    await pg.enqueue("q1", started())
    lease = await pg.claim("w1", lease_s=30)
    assert lease is not None
    async with await psycopg.AsyncConnection.connect(POSTGRES_DSN) as other:
        # another worker's claim, caught between its UPDATE and its COMMIT
        await other.execute(
            f"UPDATE {pg_schema}.leases SET worker_id = 'w2', epoch = epoch + 1 WHERE run_id = 'q1'"
        )
        outcome: list[BaseException | int] = []

        async def write() -> None:
            try:
                outcome.append(await pg.append("q1", [charged()], expected_seq=1, lease=lease))
            except LeaseLost as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            await anyio.sleep(0.3)
            assert outcome == []  # the append waits on the lease row instead of writing past the claim
            await other.commit()
    (result,) = outcome
    assert isinstance(result, LeaseLost) and "'w2'" in str(result)
    assert len(await pg.load("q1")) == 1


async def test_a_claim_skips_a_run_whose_append_is_in_flight_instead_of_waiting(
    pg: PostgresStore, pg_schema: str
) -> None:
    await pg.enqueue("q1", started())
    lease = await pg.claim("w1", lease_s=30)
    assert lease is not None
    await pg.renew(lease)
    async with await psycopg.AsyncConnection.connect(POSTGRES_DSN) as other:
        await other.execute(f"UPDATE {pg_schema}.leases SET expires_at = 0 WHERE run_id = 'q1'")
        await other.commit()
        # what a leased append holds until it commits
        await other.execute(f"SELECT 1 FROM {pg_schema}.leases WHERE run_id = 'q1' FOR SHARE")
        t0 = time.perf_counter()
        assert await pg.claim("w2", lease_s=30) is None
        assert time.perf_counter() - t0 < 1.0
        await other.commit()
    taken = await pg.claim("w2", lease_s=30)
    assert taken is not None and taken.epoch == lease.epoch + 1
