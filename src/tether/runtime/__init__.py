"""The runtime: the step loop that wires models, tools and the journal together."""

from ._api import run as run
from ._api import run_sync as run_sync
from ._loop import Runner as Runner
from ._loop import RunObserver as RunObserver
from ._loop import new_run_id as new_run_id
from ._replay import ReplayReport as ReplayReport
from ._replay import RunState as RunState
from ._replay import check_replay as check_replay
from ._replay import fork as fork
from ._replay import replay as replay

__all__ = [
    "ReplayReport",
    "RunObserver",
    "RunState",
    "Runner",
    "check_replay",
    "fork",
    "new_run_id",
    "replay",
    "run",
    "run_sync",
]
