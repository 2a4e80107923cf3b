"""A journal row that no longer parses (a bad restore, a hand edit, a disk fault), in SQLite and PostgreSQL.

The defined outcome: reading the run's journal raises `StoreError` naming the run and the event and
saying to run `tether audit verify`; nothing else about the store breaks (the run's summary, listing,
other runs), and `verify` reports the row, so `tether audit verify` exits non-zero naming it. What a
worker does with such a run is in `tests/workers/test_faults_poison.py`.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from testservers import POSTGRES_DSN, drop_schema, new_schema_name, require_postgres
from tether import Runner
from tether.exceptions import StoreError
from tether.journal import ModelResponded, RunStarted, SQLiteStore, Store, UsageCharged
from tether.journal.stores.postgres import PostgresStore
from tether.models import ModelResponse, Usage

pytestmark = pytest.mark.anyio

CORRUPTIONS = {
    "truncated": '{"type": "model_responded", "at": 2.0, "st',
    "unknown type": '{"type": "nonsense", "at": 2.0}',
    "missing field": '{"type": "model_responded", "at": 2.0, "step": 1}',
    "not an object": "[1, 2, 3]",
}


class Journal:
    """A store of one backend, and a way to write a row behind its back (SQL on a connection of its own)."""

    def __init__(self, kind: str, store: Store, url: str, raw: object) -> None:
        self.kind, self.store, self.url, self._raw = kind, store, url, raw

    async def corrupt(self, run_id: str, seq: int, data: str) -> None:
        if self.kind == "sqlite":
            assert isinstance(self._raw, Path)
            with sqlite3.connect(self._raw) as conn:
                conn.execute("UPDATE events SET data = ? WHERE run_id = ? AND seq = ?", (data, run_id, seq))
        else:
            async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
                await conn.execute(
                    f'UPDATE "{self._raw}".events SET data = %s WHERE run_id = %s AND seq = %s',
                    (data, run_id, seq),
                )


@pytest.fixture(params=["sqlite", "postgres"])
async def journal(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Journal]:
    if request.param == "sqlite":
        path = tmp_path / "j.db"
        store: Store = SQLiteStore(path)
        yield Journal("sqlite", store, f"sqlite:///{path}", path)
        await store.aclose()
        return
    await require_postgres()
    schema = new_schema_name()
    store = PostgresStore(POSTGRES_DSN, schema=schema, max_size=2)
    try:
        yield Journal("postgres", store, f"postgresql://root@127.0.0.1:5432/test?schema={schema}", schema)
    finally:
        await store.aclose()
        await drop_schema(schema)


def started(run_input: str = "hi") -> RunStarted:
    return RunStarted(at=1.0, agent="a", input=run_input, model="test:m", instructions="")


async def three_events(store: Store, run_id: str) -> None:
    await store.create_run(run_id, started())
    response = ModelResponse(text="thinking", model="test:m")
    await store.append(
        run_id,
        [
            ModelResponded(at=2.0, step=1, response=response),
            UsageCharged(at=2.0, step=1, model="test:m", usage=Usage(input_tokens=5, output_tokens=3)),
        ],
        expected_seq=1,
    )


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
async def test_a_row_that_does_not_parse_is_a_clear_error_naming_the_run_and_the_event(
    journal: Journal, corruption: str
) -> None:
    store = journal.store
    await three_events(store, "bad")
    await three_events(store, "good")
    await journal.corrupt("bad", 1, CORRUPTIONS[corruption])

    with pytest.raises(StoreError) as caught:
        await store.load("bad")
    message = str(caught.value)
    assert "event 1 of run 'bad'" in message and "cannot be read" in message
    assert "`tether audit verify bad`" in message
    assert "\n" not in message and not caught.value.retryable  # one line; waiting will not fix it
    # resuming it fails the same way, before anything is written to it
    with pytest.raises(StoreError, match="event 1 of run 'bad'"):
        await Runner(store).resume("bad")
    assert (await store.get_run("bad")).event_count == 3

    # the rest of the store is unharmed
    info = await store.get_run("bad")
    assert (info.status, info.steps) == ("running", 1)
    assert {r.run_id for r in await store.list_runs()} == {"bad", "good"}
    assert [s.event.type for s in await store.load("good")] == [
        "run_started",
        "model_responded",
        "usage_charged",
    ]
    assert await store.verify("good") == []
    # and the integrity check names the row
    assert await store.verify("bad") == [
        "event 1 does not match its hash: it was edited, or rows were reordered"
    ]


async def test_tether_audit_verify_reports_the_unreadable_row(journal: Journal) -> None:
    await three_events(journal.store, "bad")
    await journal.corrupt("bad", 2, CORRUPTIONS["truncated"])
    out = subprocess.run(
        [sys.executable, "-m", "tether.cli", "audit", "verify", "bad", "--store", journal.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "TAMPERED run bad: event 2 does not match its hash" in out.stdout, out.stdout + out.stderr
