"""Agents: definitions (instructions, tools, model, limits) and what their runs return."""

from ._agent import DEFAULT_MODEL as DEFAULT_MODEL
from ._agent import Agent as Agent
from ._agent import Limits as Limits
from ._loader import load_agent as load_agent
from ._result import RunResult as RunResult

__all__ = ["DEFAULT_MODEL", "Agent", "Limits", "RunResult", "load_agent"]
