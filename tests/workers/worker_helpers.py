"""What the worker tests share: waiting for runs, forcing a lease to expire, reading journals."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import anyio

from testservers import POSTGRES_DSN, drop_schema, new_schema_name, require_postgres  # noqa: E402, F401 - the test servers, for the tests here
from tether.journal import MemoryStore, SQLiteStore, Store


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], *, timeout_s: float = 30.0, what: str = ""
) -> None:
    with anyio.fail_after(timeout_s):
        while not await predicate():
            await anyio.sleep(0.02)


async def all_terminal(store: Store, run_ids: Iterable[str]) -> bool:
    for run_id in run_ids:
        if not (await store.get_run(run_id)).terminal:
            return False
    return True


async def expire_by_hand(store: Store, run_id: str) -> None:
    """Make the run's lease look expired, as if its worker had died long ago."""
    if isinstance(store, MemoryStore):
        store._leases[run_id].expires_at = 0.0
    elif isinstance(store, SQLiteStore):
        store._conn.execute("UPDATE leases SET expires_at = 0 WHERE run_id = ?", (run_id,))
    else:
        import psycopg

        schema = store.schema  # type: ignore[attr-defined]
        async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
            await conn.execute(f'UPDATE "{schema}".leases SET expires_at = 0 WHERE run_id = %s', (run_id,))


async def event_types(store: Store, run_id: str) -> list[str]:
    return [s.event.type for s in await store.load(run_id)]
