"""What only the SQLite store does: a file that survives, tamper evidence, locks and permissions."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from tether.exceptions import ConfigError, StoreError, StoreUnavailable
from tether.journal import MemoryStore, RunStarted, SQLiteStore, open_store

pytestmark = pytest.mark.anyio


def started() -> RunStarted:
    return RunStarted(at=1.0, agent="a", input="hi", model="test:m", instructions="")


async def test_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    s = SQLiteStore(path)
    await s.create_run("r1", started())
    await s.aclose()
    s2 = SQLiteStore(path)
    assert (await s2.get_run("r1")).agent == "a"
    assert [e.event for e in await s2.load("r1")] == [started()]


async def _journal_with_events(path: Path) -> SQLiteStore:
    s = SQLiteStore(path)
    await s.create_run("r1", started())
    for i in range(3):
        await s.append("r1", [started().model_copy(update={"at": 2.0 + i})], expected_seq=1 + i)
    return s


@pytest.mark.parametrize(
    ("tamper", "finding"),
    [
        ("UPDATE events SET data = replace(data, '\"hi\"', '\"HI\"') WHERE seq = 2", "event 2 does not match"),
        ("DELETE FROM events WHERE seq = 1", "event 1 is missing"),
        ("DELETE FROM events WHERE seq = 3", "events were removed from the end"),
        (
            "UPDATE events SET seq = -1 WHERE seq = 1; UPDATE events SET seq = 1 WHERE seq = 2; "
            "UPDATE events SET seq = 2 WHERE seq = -1",
            "event 1 does not match",
        ),
    ],
    ids=["edited", "removed", "truncated", "reordered"],
)
async def test_tampering_is_detected(tmp_path: Path, tamper: str, finding: str) -> None:
    path = tmp_path / "j.db"
    s = await _journal_with_events(path)
    assert await s.verify("r1") == []
    with sqlite3.connect(path) as conn:
        conn.executescript(tamper)
    problems = await s.verify("r1")
    assert problems and finding in problems[0]


async def test_locked_database_gives_a_clear_error_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    s = SQLiteStore(path, busy_timeout_s=0.2)
    await s.create_run("r1", started())
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    with pytest.raises(StoreUnavailable, match="locked by another process.*resume the run"):
        await s.append("r1", [started()], expected_seq=1)
    other.execute("ROLLBACK")
    other.close()
    assert await s.append("r1", [started()], expected_seq=1) == 2


def _immutable(path: Path, on: bool) -> bool:
    # root ignores permission bits; the immutable attribute makes the file read-only even for root
    return subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True).returncode == 0


async def test_read_only_file_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    s = SQLiteStore(path)
    await s.create_run("r1", started())
    await s.aclose()
    for extra in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        extra.unlink(missing_ok=True)
    if not _immutable(path, True):
        pytest.skip("chattr +i is not supported on this filesystem")
    try:
        ro = SQLiteStore(path)
        assert (await ro.get_run("r1")).agent == "a"  # reading still works
        with pytest.raises(StoreUnavailable, match="read-only.*--store or TETHER_STORE"):
            await ro.append("r1", [started()], expected_seq=1)
        await ro.aclose()
    finally:
        _immutable(path, False)


async def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a tether journal or is corrupt"):
        SQLiteStore(path)


async def test_power_loss_mode_fsyncs_every_commit(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "j.db", durability="power-loss")
    assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    c = SQLiteStore(tmp_path / "k.db")
    assert c._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert c._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_open_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert isinstance(open_store("memory:"), MemoryStore)
    s = open_store("sqlite:///rel/t.db?durability=power-loss")
    assert isinstance(s, SQLiteStore) and s.path == Path("rel/t.db") and s.durability == "power-loss"
    s = open_store(f"sqlite:///{tmp_path}/abs.db")
    assert isinstance(s, SQLiteStore) and s.path == tmp_path / "abs.db"
    assert isinstance(open_store("plain.db"), SQLiteStore)
    monkeypatch.setenv("TETHER_STORE", "memory:")
    assert isinstance(open_store(), MemoryStore)
    monkeypatch.delenv("TETHER_STORE")
    default = open_store()
    assert isinstance(default, SQLiteStore) and default.path == Path(".tether/tether.db")
    with pytest.raises(ConfigError, match="unknown store"):
        open_store("mongodb://x")
    with pytest.raises(ConfigError, match="durability"):
        open_store("sqlite:///x.db?durability=sometimes")
