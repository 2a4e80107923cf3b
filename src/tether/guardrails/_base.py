"""Shared machinery of the text guards: input caps, stage sets, thresholds to actions."""

from __future__ import annotations

from collections.abc import Iterable

from tether.exceptions import ConfigError

from ._verdict import ACTIONS, Action, GuardContext, Stage, ToolCallCheck, Verdict

__all__ = ["DEFAULT_MAX_CHARS", "TextGuard", "check_action", "check_stages", "mask", "redact"]

# What one rule guard scans of a text. Every pattern is linear, so the cap bounds time, not correctness of
# what is scanned: 256 KiB is ~2 ms per guard; the stack flags anything longer as `oversize`.
DEFAULT_MAX_CHARS = 256 * 1024
_STAGES: frozenset[Stage] = frozenset(("input", "output", "tool_call"))


def check_stages(stages: Iterable[str], guard: str) -> frozenset[Stage]:
    """Validate a stage set given in configuration.

    Args:
        stages: stage names.
        guard: the guard's name, for the message.

    Returns:
        The stages as a frozenset.

    Raises:
        ConfigError: a name is not a stage.
    """
    out = frozenset(stages)
    unknown = out - _STAGES
    if unknown or not out:
        raise ConfigError(
            f"guard {guard!r}: stages must be a non-empty subset of {sorted(_STAGES)}, got {sorted(out)}"
        )
    return out  # type: ignore[return-value]  # checked against _STAGES just above


def check_action(action: str, guard: str) -> Action:
    """Validate an action given in configuration.

    Raises:
        ConfigError: `action` is not one of `ACTIONS`.
    """
    if action not in ACTIONS:
        raise ConfigError(f"guard {guard!r}: action must be one of {ACTIONS}, got {action!r}")
    return action  # type: ignore[return-value]  # membership checked just above


class TextGuard:
    """Base of guards that read text: tool calls are read as their JSON arguments.

    Subclasses implement `_check_text`. The text is cut to `max_chars` before scanning.

    Args:
        name: the guard's name in verdicts.
        stages: where it runs.
        max_chars: scan at most this many characters.
    """

    def __init__(self, *, name: str, stages: Iterable[Stage], max_chars: int = DEFAULT_MAX_CHARS):
        self._name = name
        self._stages = check_stages(stages, name)
        if max_chars <= 0:
            raise ConfigError(f"guard {name!r}: max_chars must be positive, got {max_chars}")
        self.max_chars = max_chars

    @property
    def name(self) -> str:
        """The guard's name in verdicts."""
        return self._name

    @property
    def stages(self) -> frozenset[Stage]:
        """The stages the guard runs at."""
        return self._stages

    def check(self, subject: str | ToolCallCheck, context: GuardContext) -> list[Verdict]:
        """Check a text, or the JSON arguments of a tool call.

        Args:
            subject: the text or the tool call.
            context: where and from whom.

        Returns:
            The findings.
        """
        if isinstance(subject, ToolCallCheck):
            verdicts = self._check_text(subject.as_text(self.max_chars), context)
            # a tool call's arguments are not rewritten in place: what would be redacted is flagged instead
            return [_no_redact(v) for v in verdicts]
        verdicts = self._check_text(subject[: self.max_chars], context)
        if len(subject) > self.max_chars:
            # what was not scanned passes through unchanged: redaction must not truncate the text
            tail = subject[self.max_chars :]
            verdicts = [_with_tail(v, tail) for v in verdicts]
        return verdicts

    def _check_text(self, text: str, context: GuardContext) -> list[Verdict]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self._name!r}, stages={sorted(self._stages)})"


def _with_tail(v: Verdict, tail: str) -> Verdict:
    if v.redacted_text is None:
        return v
    return Verdict(
        guard=v.guard,
        category=v.category,
        action=v.action,
        score=v.score,
        spans=v.spans,
        message=v.message,
        redacted_text=v.redacted_text + tail,
    )


def _no_redact(v: Verdict) -> Verdict:
    if v.action != "redact":
        return v
    return Verdict(
        guard=v.guard, category=v.category, action="flag", score=v.score, spans=v.spans, message=v.message
    )


def mask(value: str) -> str:
    """A recognisable but useless form of a sensitive value, for verdicts and logs (`sk…9f`, `***`)."""
    value = value.strip()
    if len(value) < 8:
        return "*" * len(value)
    return f"{value[:2]}…{value[-2:]}"


def redact(text: str, found: list[tuple[int, int, str]], template: str = "[{label}]") -> str:
    """Replace each found span with a placeholder; overlapping spans are merged first.

    Args:
        text: the text.
        found: `(start, end, label)` spans, in any order.
        template: the placeholder, formatted with `label` in upper case.

    Returns:
        The text with every span replaced.
    """
    if not found:
        return text
    merged: list[list[int | str]] = []
    for start, end, label in sorted(found):
        if merged and start < int(merged[-1][1]):
            merged[-1][1] = max(int(merged[-1][1]), end)
            continue
        merged.append([start, end, label])
    parts: list[str] = []
    pos = 0
    for start, end, label in merged:
        parts.append(text[pos : int(start)])
        parts.append(template.format(label=str(label).upper()))
        pos = int(end)
    parts.append(text[pos:])
    return "".join(parts)
