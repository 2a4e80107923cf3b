"""Grounding: tool arguments (and, later, answers) must trace to what the run has actually seen."""

from ._answers import ungrounded_in_answer as ungrounded_in_answer
from ._answers import unusable_answer as unusable_answer
from ._provenance import Evidence as Evidence
from ._provenance import Ungrounded as Ungrounded
from ._provenance import find_ungrounded as find_ungrounded

__all__ = ["Evidence", "Ungrounded", "find_ungrounded", "ungrounded_in_answer", "unusable_answer"]
