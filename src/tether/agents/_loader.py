"""Find an agent by reference: `package.module:attr` or `path/to/file.py:attr`."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from ..exceptions import AgentNotFound
from ._agent import Agent

__all__ = ["load_agent"]


def load_agent(ref: str) -> Agent:
    """Import the agent that `ref` names.

    Raises:
        AgentNotFound: the module cannot be imported, has no such attribute, or it is not an Agent.
    """
    module_name, sep, attr = ref.rpartition(":")
    if not sep or not module_name or not attr:
        raise AgentNotFound(f"{ref!r} is not an agent reference; use module.path:agent or file.py:agent")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise AgentNotFound(f"no file {module_name!r} (from {ref!r}); check the path")
        name = f"_tether_agent_{abs(hash(str(path.resolve())))}"
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[name]
                raise AgentNotFound(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    else:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            # `tether run app:agent` must find app.py in the working directory, as `python -m` would
            sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise AgentNotFound(
                f"cannot import {module_name!r} (from {ref!r}): {exc}; check the module path and that it is "
                "importable from the working directory"
            ) from exc
        except Exception as exc:
            raise AgentNotFound(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    try:
        agent = getattr(module, attr)
    except AttributeError:
        agents = sorted(k for k, v in vars(module).items() if isinstance(v, Agent))
        raise AgentNotFound(
            f"{module_name!r} has no attribute {attr!r}; agents defined there: {agents or 'none'}"
        ) from None
    if not isinstance(agent, Agent):
        raise AgentNotFound(f"{ref!r} is a {type(agent).__name__}, not an Agent")
    if agent._ref is None:
        agent._ref = ref if not module_name.endswith(".py") else f"{Path(module_name).resolve()}:{attr}"
    return agent
