"""tether: a runtime for running LLM agents in production.

```python
from tether import Agent, tool, run_sync

@tool
def add(a: float, b: float) -> float:
    '''Add two numbers.'''
    return a + b

agent = Agent("calc", instructions="Use the tools.", tools=[add])
print(run_sync(agent, "What is 2 + 40?").output)
```
"""

from ._clock import Clock as Clock
from ._clock import SystemClock as SystemClock
from .agents import Agent as Agent
from .agents import Limits as Limits
from .agents import RunResult as RunResult
from .exceptions import ConfigError as ConfigError
from .exceptions import RunError as RunError
from .exceptions import TetherError as TetherError
from .journal import open_store as open_store
from .models import ModelSettings as ModelSettings
from .runtime import Runner as Runner
from .runtime import run as run
from .runtime import run_sync as run_sync
from .tools import ToolContext as ToolContext
from .tools import tool as tool

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "Clock",
    "ConfigError",
    "Limits",
    "ModelSettings",
    "RunError",
    "RunResult",
    "Runner",
    "SystemClock",
    "TetherError",
    "ToolContext",
    "open_store",
    "run",
    "run_sync",
    "tool",
]
