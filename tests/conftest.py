from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tether.journal import MemoryStore, SQLiteStore, Store


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


STORE_BACKENDS = ["memory", "sqlite"]


async def make_store(kind: str, tmp_path: Path) -> Store:
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SQLiteStore(tmp_path / "journal.db")
    raise AssertionError(kind)


@pytest.fixture(params=STORE_BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s = await make_store(request.param, tmp_path)
    yield s
    await s.aclose()
