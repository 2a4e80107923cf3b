"""Grounding: tool arguments, preconditions and answers must trace to what the run has actually seen."""

from ._answers import HOW_TO as HOW_TO
from ._answers import PARROTED as PARROTED
from ._answers import AnswerNumbers as AnswerNumbers
from ._answers import LeftOut as LeftOut
from ._answers import answer_numbers as answer_numbers
from ._answers import describes_steps as describes_steps
from ._answers import left_out as left_out
from ._answers import names_tool as names_tool
from ._answers import stated_numbers as stated_numbers
from ._answers import ungrounded_in_answer as ungrounded_in_answer
from ._answers import unusable_answer as unusable_answer
from ._arithmetic import derive as derive
from ._arithmetic import misscaled as misscaled
from ._currency import Mislabelled as Mislabelled
from ._currency import mislabelled_amount as mislabelled_amount
from ._entities import identifiers as identifiers
from ._entities import json_records as json_records
from ._entities import named_record as named_record
from ._entities import references as references
from ._entities import reported_missing as reported_missing
from ._entities import says_missing as says_missing
from ._guide import TOOL_GUIDE as TOOL_GUIDE
from ._items import OtherAmount as OtherAmount
from ._items import other_amount as other_amount
from ._provenance import Evidence as Evidence
from ._provenance import Ungrounded as Ungrounded
from ._provenance import find_ungrounded as find_ungrounded
from ._taint import InjectedCall as InjectedCall
from ._taint import asked_object as asked_object
from ._taint import asks_for as asks_for
from ._taint import injected_call as injected_call

__all__ = [
    "HOW_TO",
    "PARROTED",
    "TOOL_GUIDE",
    "AnswerNumbers",
    "Evidence",
    "InjectedCall",
    "LeftOut",
    "Mislabelled",
    "OtherAmount",
    "Ungrounded",
    "answer_numbers",
    "asked_object",
    "asks_for",
    "derive",
    "describes_steps",
    "find_ungrounded",
    "identifiers",
    "injected_call",
    "left_out",
    "json_records",
    "mislabelled_amount",
    "misscaled",
    "named_record",
    "other_amount",
    "names_tool",
    "references",
    "reported_missing",
    "says_missing",
    "stated_numbers",
    "ungrounded_in_answer",
    "unusable_answer",
]
