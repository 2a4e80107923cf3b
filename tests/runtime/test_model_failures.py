"""A model that cannot answer ends the run with a clear, journaled reason (one test per failure mode)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tether import Agent, Runner
from tether.journal import ModelFailed, Store

pytestmark = pytest.mark.anyio


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_unreachable_endpoint(store: Store) -> None:
    from tether.models.openai_compat import OpenAICompatModel

    model = OpenAICompatModel("qwen", base_url=f"http://127.0.0.1:{_closed_port()}/v1")
    result = await Runner(store).run(Agent("a", model=model), "hi")
    assert result.status == "failed"
    assert "cannot connect to http://127.0.0.1:" in result.reason and "is the server running?" in result.reason
    failed = [s.event for s in await store.load(result.run_id) if isinstance(s.event, ModelFailed)]
    assert failed and failed[0].error_type == "ModelUnreachable" and failed[0].retryable
    await model.aclose()


async def test_corrupt_model_file(store: Store, tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="the local backend needs tether[local]")
    from tether.models.llamacpp import LlamaCppModel

    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a gguf file at all" * 1000)
    result = await Runner(store).run(Agent("a", model=LlamaCppModel(path=bad)), "hi")
    assert result.status == "failed"
    assert str(bad) in result.reason and "GGUF" in result.reason
    failed = [s.event for s in await store.load(result.run_id) if isinstance(s.event, ModelFailed)]
    assert failed[0].error_type == "ModelFileError"


def test_a_bad_model_string_fails_when_the_agent_is_defined() -> None:
    from tether.exceptions import ConfigError

    with pytest.raises(ConfigError, match="unknown model provider 'nope'"):
        Agent("a", model="nope:x")
    with pytest.raises(ConfigError, match="is not a model string"):
        Agent("a", model="gpt-4o")
