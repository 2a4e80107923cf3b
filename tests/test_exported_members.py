"""The public API is pinned: changing it must be deliberate."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "tether": [
        "Agent", "Clock", "ConfigError", "Limits", "ModelSettings", "RunError", "RunResult", "Runner",
        "SystemClock", "TetherError", "ToolContext", "open_store", "run", "run_sync", "tool",
    ],
    "tether.testing": ["AnthropicServer", "FakeClock", "FaultProxy", "ScriptedModel", "call"],
    "tether.tools": ["Lookup", "Risk", "Seen", "Tool", "ToolContext", "ToolSpec", "render_output", "tool"],
    "tether.agents": ["DEFAULT_MODEL", "Agent", "Limits", "RunResult", "load_agent"],
    "tether.runtime": [
        "ReplayReport", "RunObserver", "RunState", "Runner", "check_replay", "fork", "new_run_id", "replay",
        "run", "run_sync",
    ],
    "tether.workers": ["Worker", "WorkerStats", "cancel", "submit"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_exported_members(module: str) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(PUBLIC[module])
    for name in mod.__all__:
        assert hasattr(mod, name), name
