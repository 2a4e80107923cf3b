"""The `tether` command line."""

from . import _approvals as _approvals  # registers `tether approvals ...` and `tether audit overrides`
from . import _governance as _governance  # registers commands
from . import _guard as _guard  # registers `tether guard scan`
from . import _kill as _kill  # registers `tether kill` and `tether unkill`
from . import _models as _models  # registers `tether models serve`
from . import _workers as _workers  # registers `tether worker` and runs cancel, prune, replay, fork
from ._main import cli as cli
from ._main import main as main

__all__ = ["cli", "main"]
