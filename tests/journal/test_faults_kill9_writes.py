"""kill -9 during the journal write itself leaves the old state or the new one, never a corrupt one.

SQLite (both durability modes) and PostgreSQL. This file also runs as a script
(`python test_faults_kill9_writes.py fork-writers URL`): a process that imports tether once and then
forks, round after round, a writer that appends large batches to a journal in a tight loop and reports
each append it starts and each commit; it SIGKILLs the writer at a random moment and says how many
commits the writer had seen go through. After each kill the test checks the journal from its own
connection: the hash chain verifies, the journal holds whole batches only, and every commit the writer
saw return is there. `KILL9_SEED=...` replays a schedule of kill times.
(A run killed mid-step and resumed: `tests/runtime/test_kill9.py`.)
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from psycopg.conninfo import conninfo_to_dict

from tether.journal import RunStarted, SQLiteStore, Store, ToolCompleted, open_store

BATCH = 25
"""Events per append: one transaction of about 50 KB."""
PAYLOAD = 2000
KILLS = 30


def _content(run_id: str, seq: int) -> str:
    return f"{run_id}:{seq}:" + "x" * PAYLOAD


def _batch(run_id: str, first_seq: int) -> list[ToolCompleted]:
    return [
        ToolCompleted(
            at=float(seq),
            step=1,
            call_id=f"c{seq}",
            tool="write",
            output={"seq": seq},
            content=_content(run_id, seq),
            duration_s=0.0,
        )
        for seq in range(first_seq, first_seq + BATCH)
    ]


def _write_until_killed(url: str, run_id: str, report_fd: int) -> None:
    """Append whole batches to a new run as fast as possible, reporting to `report_fd` when each append
    starts (`s`) and when it has committed (`c`)."""

    async def go() -> None:
        store = open_store(url)
        await store.create_run(
            run_id, RunStarted(at=0.0, agent="kill9", input="batches", model="none", instructions="")
        )
        os.write(report_fd, b"r")
        seq = 1
        while True:
            batch = _batch(run_id, seq)
            os.write(report_fd, b"s")
            seq = await store.append(run_id, batch, expected_seq=seq)
            os.write(report_fd, b"c")

    anyio.run(go)


def _fork_writers(url: str) -> None:
    """For each `RUN_ID DELAY_S` line on stdin: fork a writer, SIGKILL it DELAY_S after it started
    writing, and print `killed COMMITS IN_APPEND` (IN_APPEND: 1 if the kill landed inside an append call),
    or `broken WHY`."""
    for line in sys.stdin:
        run_id, delay_s = line.split()
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the writer; it never returns
            os.close(read_fd)
            try:
                _write_until_killed(url, run_id, write_fd)
            finally:
                os._exit(70)
        os.close(write_fd)
        ready = os.read(read_fd, 1)
        if ready == b"r":
            time.sleep(float(delay_s))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        reports = bytearray()
        while chunk := os.read(read_fd, 65536):
            reports += chunk
        os.close(read_fd)
        if ready != b"r" or os.WTERMSIG(status) != signal.SIGKILL:
            print(f"broken the writer did not start or died by itself (status {status})", flush=True)
        else:
            print(f"killed {reports.count(b'c')} {int(reports.endswith(b's'))}", flush=True)


@pytest.fixture(params=["sqlite-crash", "sqlite-power-loss", "postgres"])
async def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param.startswith("sqlite"):
        durability = request.param.removeprefix("sqlite-")
        await SQLiteStore(tmp_path / "j.db").aclose()  # the tables exist before the first writer is forked
        yield f"sqlite:///{tmp_path}/j.db?durability={durability}"
        return
    from testservers import POSTGRES_DSN, drop_schema, new_schema_name, require_postgres

    await require_postgres()
    schema = new_schema_name()
    p = conninfo_to_dict(POSTGRES_DSN)
    where = f"{p.get('host', '127.0.0.1')}:{p.get('port', 5432)}/{p.get('dbname', 'test')}"
    try:
        yield f"postgresql://{p.get('user', 'root')}@{where}?schema={schema}"
    finally:
        await drop_schema(schema)


async def _check_after_kill(store: Store, run_id: str, acked: int) -> int:
    """The journal holds whole batches only, at least every one whose commit returned; returns how many."""
    assert await store.verify(run_id) == [], run_id  # hash chain and summary row agree
    events = await store.load(run_id)
    written = len(events) - 1
    assert written % BATCH == 0, f"{run_id}: {written} events is not a whole number of batches"
    batches = written // BATCH
    # every commit the writer saw return is there; at most one more (committed, killed before it heard)
    assert acked <= batches <= acked + 1, (run_id, acked, batches)
    for stored in events[1:]:
        event = stored.event
        assert isinstance(event, ToolCompleted) and event.call_id == f"c{stored.seq}"
        assert event.content == _content(run_id, stored.seq)
    return batches


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_kill9_during_journal_writes_leaves_whole_batches_and_an_intact_journal(
    journal_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> None:
    seed = int(os.environ.get("KILL9_SEED") or secrets.randbits(32))
    rng = random.Random(seed)
    with open(tmp_path / "forker.err", "wb") as err:
        forker = subprocess.Popen(
            [sys.executable, __file__, "fork-writers", journal_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            bufsize=1,
        )
    store = open_store(journal_url)
    t0 = time.monotonic()
    acked_total = batches_total = unheard_commits = in_append = 0
    run_ids = []
    try:
        assert forker.stdin is not None and forker.stdout is not None
        for kill in range(KILLS):
            run_id = f"k{kill}"
            run_ids.append(run_id)
            forker.stdin.write(f"{run_id} {rng.uniform(0.0, 0.15):.4f}\n")
            forker.stdin.flush()
            answer = forker.stdout.readline().split(maxsplit=1)
            assert answer and answer[0] == "killed", (
                f"{answer}: {(tmp_path / 'forker.err').read_text()[-2000:]}"
            )
            acked, inside = (int(x) for x in answer[1].split())
            in_append += inside
            batches = await _check_after_kill(store, run_id, acked)
            acked_total += acked
            batches_total += batches
            unheard_commits += batches - acked
        forker.stdin.close()
        assert forker.wait(timeout=10) == 0
        # after every kill: each journal still intact, the file (SQLite) sound
        for run_id in run_ids:
            assert await store.verify(run_id) == []
        if journal_url.startswith("sqlite"):
            path = journal_url.removeprefix("sqlite:///").split("?")[0]
            with sqlite3.connect(path) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        if forker.poll() is None:
            forker.kill()
            forker.wait()
        for pipe in (forker.stdin, forker.stdout):
            if pipe is not None:
                pipe.close()
        await store.aclose()
    figures = {
        "store": request.node.callspec.params["journal_url"],
        "seed": seed,
        "kills": KILLS,
        "kills_inside_an_append": in_append,
        "batches_written": batches_total,
        "commits_acknowledged": acked_total,
        "commits_done_but_unacknowledged_at_the_kill": unheard_commits,
        "elapsed_s": round(time.monotonic() - t0, 1),
    }
    with capsys.disabled():
        print(f"\nkill -9 during writes: {json.dumps(figures)}", flush=True)
    assert batches_total > KILLS and in_append >= KILLS // 2  # the kills landed in writes


if __name__ == "__main__" and sys.argv[1:2] == ["fork-writers"]:
    _fork_writers(sys.argv[2])
