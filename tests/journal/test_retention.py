"""Retention: pruning finished runs keeps a journal's disk use bounded however many runs pass through."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tether.journal import RunFinished, RunStarted, SQLiteStore, UsageCharged
from tether.models import Usage

pytestmark = pytest.mark.anyio


async def _cycle(store: SQLiteStore, cycle: int, runs: int) -> None:
    for n in range(runs):
        run_id = f"c{cycle}_{n}"
        await store.create_run(
            run_id, RunStarted(at=1.0, agent="a", input="x" * 500, model="m", instructions="")
        )
        charges = [UsageCharged(at=2.0, step=s, model="m", usage=Usage(input_tokens=s)) for s in range(1, 9)]
        await store.append(run_id, charges, expected_seq=1)
        await store.append(
            run_id,
            [RunFinished(at=3.0, status="completed", reason="", steps=8, usage=Usage())],
            expected_seq=9,
        )
    assert len(await store.prune(before=time.time())) == runs


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


async def test_sqlite_disk_use_stays_bounded_when_finished_runs_are_pruned(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    store = SQLiteStore(path)
    try:
        await _cycle(store, 0, 300)
        store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        after_first = _size(path)
        for cycle in range(1, 6):
            await _cycle(store, cycle, 300)
            store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        # six times the runs have passed through; the file reuses the pages the pruned runs freed
        assert _size(path) <= after_first * 1.1, (after_first, _size(path))
        assert await store.list_runs() == []
    finally:
        await store.aclose()
