"""Record the journals `test_replay.py` replays: `python tests/replay/record.py [SCENARIO ...]`.

Runs each scenario of `replay_scenarios.py` (all, or those named) with its scripted model on an in-memory
store and writes its journal to `journals/<scenario>.jsonl`, one event a line as the store holds it
(`Event.model_dump_json()`). Record again only when a change in a run's path is meant (the replay test's
diff shows what changed); review the new journals like code, then commit them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
from replay_scenarios import SCENARIOS

from tether import Runner
from tether.journal import MemoryStore

JOURNALS = Path(__file__).resolve().parent / "journals"


async def record(name: str) -> Path:
    scenario = SCENARIOS[name]
    store = MemoryStore()
    result = await Runner(store).run(scenario.agent(), scenario.input)
    path = JOURNALS / f"{name}.jsonl"
    lines = [stored.event.model_dump_json() for stored in await store.load(result.run_id)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(names: list[str]) -> None:
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        raise SystemExit(f"unknown scenarios {unknown}; known: {sorted(SCENARIOS)}")
    JOURNALS.mkdir(exist_ok=True)
    for name in names or sorted(SCENARIOS):
        path = anyio.run(record, name)
        print(f"recorded {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")


if __name__ == "__main__":
    main(sys.argv[1:])
