"""The `tether` command line."""

from ._main import cli as cli
from ._main import main as main

__all__ = ["cli", "main"]
