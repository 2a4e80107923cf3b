"""A worker on PostgreSQL while the server goes away and comes back: it waits, says so, loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import anyio
import inproc_agents as agents
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from structlog.testing import capture_logs
from worker_helpers import POSTGRES_DSN, all_terminal, require_postgres, wait_for

from tether import ToolContext
from tether.journal.stores.postgres import PostgresStore
from tether.workers import Worker, submit

pytestmark = pytest.mark.anyio


class Outage:
    """A TCP relay to the test server that can drop every connection and refuse new ones (`stop`)."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()

    @property
    def dsn(self) -> str:
        return make_conninfo(POSTGRES_DSN, host="127.0.0.1", hostaddr="", port=self.port, sslmode="disable")

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for transport in self._transports:
            transport.abort()
        await self._server.wait_closed()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        target = conninfo_to_dict(POSTGRES_DSN)
        server_r, server_w = await asyncio.open_connection(
            target.get("host", "127.0.0.1"), target.get("port", 5432)
        )
        self._transports |= {client_w.transport, server_w.transport}

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()

        with contextlib.suppress(OSError):
            await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w), return_exceptions=True)
        client_w.transport.abort()
        server_w.transport.abort()


@pytest.fixture
async def outage() -> AsyncIterator[Outage]:
    await require_postgres()
    relay = Outage()
    await relay.start()
    try:
        yield relay
    finally:
        with contextlib.suppress(Exception):
            await relay.stop()


@pytest.fixture(autouse=True)
def fresh_agents() -> Iterator[None]:
    agents.reset()
    yield
    agents.reset()


async def test_the_database_going_away_mid_run_is_waited_out_and_nothing_is_lost(
    outage: Outage, pg_schema: str
) -> None:
    store = PostgresStore(outage.dsn, schema=pg_schema, timeout_s=1.0, max_size=4)
    try:
        run_ids = [await submit(store, agents.agent, f"job o{i}: record 1 2 3") for i in range(4)]
        in_tool = 0
        go_on = anyio.Event()

        async def hold(ctx: ToolContext, n: int) -> None:
            nonlocal in_tool
            if n == 2:
                in_tool += 1
                await go_on.wait()

        agents.on_tool = hold
        with capture_logs() as logs:
            worker = Worker(store, concurrency=4, poll_s=0.05, lease_s=6.0, max_backoff_s=0.5)
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                await wait_for(lambda: _true(in_tool == 4))
                await outage.stop()  # PostgreSQL goes away while every run is inside a tool
                go_on.set()  # the tools finish; their outcomes cannot be written now
                await anyio.sleep(2.0)
                await outage.start()  # and comes back on the same address
                with anyio.fail_after(60):
                    while True:
                        try:
                            if await all_terminal(store, run_ids):
                                break
                        except Exception:  # the test's own reads may hit the outage's tail too
                            pass
                        await anyio.sleep(0.1)
                worker.drain()
        for run_id in run_ids:
            info = await store.get_run(run_id)
            assert (info.status, info.output) == ("completed", "recorded 3 entries")
            assert await store.verify(run_id) == []
        assert worker.stats.store_retries > 0 and worker.stats.errors == 0
        warnings = [e for e in logs if e["log_level"] == "warning"]
        assert any("PostgreSQL 127.0.0.1" in str(e.get("error", "")) for e in warnings), warnings
        # every entry recorded, each under exactly one key (a re-run after the outage reuses its key)
        keys_by_entry: dict[tuple[str, int], set[str]] = {}
        for key, n in agents.effects:
            keys_by_entry.setdefault((key.split(":")[0], n), set()).add(key)
        assert len(keys_by_entry) == 4 * 3 and all(len(k) == 1 for k in keys_by_entry.values())
    finally:
        await store.aclose()


async def _true(value: bool) -> bool:
    return value
