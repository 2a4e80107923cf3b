"""Grounding: tool arguments (and, later, answers) must trace to what the run has actually seen."""

from ._provenance import Evidence as Evidence
from ._provenance import Ungrounded as Ungrounded
from ._provenance import find_ungrounded as find_ungrounded

__all__ = ["Evidence", "Ungrounded", "find_ungrounded"]
