"""Tools: `@tool` turns a typed Python function into something a model can call safely."""

from ._tool import Lookup as Lookup
from ._tool import Risk as Risk
from ._tool import Seen as Seen
from ._tool import Tool as Tool
from ._tool import ToolContext as ToolContext
from ._tool import ToolSpec as ToolSpec
from ._tool import render_output as render_output
from ._tool import tool as tool

__all__ = ["Lookup", "Risk", "Seen", "Tool", "ToolContext", "ToolSpec", "render_output", "tool"]
