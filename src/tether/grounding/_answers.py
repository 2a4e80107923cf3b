"""Grounded final answers: a number in an answer must come from the input or a tool result."""

from __future__ import annotations

import re

from ._provenance import _IDENT, _NUMBER, Evidence, _numbers

__all__ = ["ungrounded_in_answer", "unusable_answer"]

_TRANSCRIPT = re.compile(
    r"<\s*/?\s*(tool_call|tool_response|function_call|\|im_start\|)|^\s*\{\s*\"(name|function)\"\s*:", re.I | re.M
)


def unusable_answer(text: str) -> str | None:
    """Why `text` cannot be shown as an answer (empty, a tool call, a fake transcript), or None."""
    if not text.strip():
        return "the answer is empty"
    if _TRANSCRIPT.search(text):
        return "the answer is a tool call or a transcript, not an answer to the user"
    return None


def ungrounded_in_answer(text: str, evidence: Evidence) -> list[str]:
    """The numbers in `text` that appear in nothing the run has seen, in order, without repeats."""
    inside_idents = [m.span() for m in _IDENT.finditer(text) if re.search(r"[A-Za-z]", m.group(0))]
    found: list[str] = []
    for m in _NUMBER.finditer(text):
        if any(a <= m.start() and m.end() <= b for a, b in inside_idents):
            continue
        if not all(evidence.has_number(n) for n in _numbers(m.group(0))):
            value = m.group(0).strip()
            if value not in found:
                found.append(value)
    return found
