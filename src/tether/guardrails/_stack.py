"""Guards composed in order: `GuardStack.check` runs them and turns their verdicts into one decision."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tether.exceptions import ConfigError

from ._base import check_action
from ._verdict import Action, Guard, GuardContext, Source, Stage, ToolCallCheck, Verdict, strongest

__all__ = ["DEFAULT_REFUSAL", "GuardResult", "GuardStack"]

DEFAULT_REFUSAL = (
    "I can't help with that request: it was stopped by this assistant's safety checks. "
    "If you think this is a mistake, rephrase the request or contact the operator."
)


@dataclass(frozen=True, kw_only=True, slots=True)
class GuardResult:
    """What a stack decided about one text or tool call.

    Attributes:
        stage: where the check ran.
        action: the strongest action any guard asked for (`allow` when none did).
        verdicts: every guard's findings, in the order the guards ran.
        text: the text after redaction (the input text when nothing was redacted); `None` for a tool call.
        refusal: the message for the user when an input was blocked; `None` otherwise.
        elapsed_s: time the stack took.
    """

    stage: Stage
    action: Action
    verdicts: tuple[Verdict, ...]
    text: str | None
    refusal: str | None = None
    elapsed_s: float = 0.0

    @property
    def blocked(self) -> bool:
        """The step must not go on with this text or call."""
        return self.action == "block"

    @property
    def escalated(self) -> bool:
        """A human must decide before the step goes on."""
        return self.action == "escalate"

    @property
    def passed(self) -> bool:
        """The step may go on (possibly with redacted text, possibly flagged)."""
        return self.action in ("allow", "redact", "flag")

    @property
    def categories(self) -> tuple[str, ...]:
        """The categories of the verdicts that asked for more than `allow`, without repeats."""
        return tuple(dict.fromkeys(v.category for v in self.verdicts if v.action != "allow"))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form for journal events, span attributes and `tether guard scan --json`."""
        return {
            "stage": self.stage,
            "action": self.action,
            "categories": list(self.categories),
            "verdicts": [v.to_dict() for v in self.verdicts],
            "refusal": self.refusal,
            "elapsed_ms": round(self.elapsed_s * 1000, 3),
        }


class GuardStack:
    """Guards run in order on every path into and out of the model and the tools.

    Redaction feeds forward: a guard sees the text as the guards before it left it, so the injection rules
    read text whose PII is already masked and nothing downstream sees what was redacted. A `block` stops
    the stack at once. A guard that raises does not open a hole: its exception becomes a `guard_error`
    verdict with the action `on_error` (`block` by default: fail closed).

    Args:
        guards: the guards, in the order they run.
        refusal_message: what the user is told when an input is blocked.
        on_error: the action for a guard that raised.
        max_chars: texts longer than this get an `oversize` verdict with `oversize_action` (the guards
            scan their own capped prefix either way).
        oversize_action: the action for an oversize text.

    Raises:
        ConfigError: two guards share a name, or an action is unknown.
    """

    def __init__(
        self,
        guards: Iterable[Guard],
        *,
        refusal_message: str = DEFAULT_REFUSAL,
        on_error: Action = "block",
        max_chars: int = 256 * 1024,
        oversize_action: Action = "flag",
    ):
        self.guards: tuple[Guard, ...] = tuple(guards)
        names = [g.name for g in self.guards]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"guard names must be unique in a stack; repeated: {duplicates}")
        if not refusal_message.strip():
            raise ConfigError("refusal_message must not be empty: a blocked user is always told why")
        self.refusal_message = refusal_message
        self.on_error = check_action(on_error, "stack")
        self.max_chars = max_chars
        self.oversize_action = check_action(oversize_action, "stack")

    def for_stage(self, stage: Stage) -> tuple[Guard, ...]:
        """The guards that run at `stage`, in order."""
        return tuple(g for g in self.guards if stage in g.stages)

    def describe(self) -> list[dict[str, Any]]:
        """Each guard's name, type and stages, for `tether guard scan` and startup logs."""
        return [{"name": g.name, "type": type(g).__name__, "stages": sorted(g.stages)} for g in self.guards]

    def check(
        self,
        subject: str | ToolCallCheck,
        context: GuardContext | None = None,
        *,
        stage: Stage | None = None,
        source: Source | None = None,
    ) -> GuardResult:
        """Run the guards of a stage over a text or a tool call.

        Args:
            subject: the text (input, output stages) or the proposed tool call (tool_call stage).
            context: where and from whom; built from `stage` and `source` when omitted.
            stage: the stage, when no context is given (`tool_call` for a tool call, `input` otherwise).
            source: who wrote the text, when no context is given (`user` by default).

        Returns:
            The decision, the verdicts, and the text after redaction.
        """
        started = time.perf_counter()
        if context is None:
            default_stage: Stage = "tool_call" if isinstance(subject, ToolCallCheck) else "input"
            context = GuardContext(stage=stage or default_stage, source=source or "user")
        if isinstance(subject, bytes | bytearray):
            # bytes from a tool or a file: decoded with replacement so that no input can crash a guard
            subject = bytes(subject).decode("utf-8", errors="replace")
        verdicts: list[Verdict] = []
        text = subject if isinstance(subject, str) else None
        if text is not None and len(text) > self.max_chars:
            verdicts.append(
                Verdict(
                    guard="stack",
                    category="oversize",
                    action=self.oversize_action,
                    score=1.0,
                    message=f"text is {len(text)} characters; guards scanned the first {self.max_chars}",
                )
            )
        for guard in self.for_stage(context.stage):
            current: str | ToolCallCheck = text if text is not None else subject
            try:
                found = guard.check(current, context)
            except Exception as exc:
                found = [
                    Verdict(
                        guard=guard.name,
                        category="guard_error",
                        action=self.on_error,
                        score=1.0,
                        message=f"guard {guard.name!r} failed: {type(exc).__name__}: {exc}"[:500],
                    )
                ]
            verdicts.extend(found)
            for v in found:
                if v.action == "redact" and v.redacted_text is not None and text is not None:
                    text = v.redacted_text
            if any(v.action == "block" for v in found):
                break
        action = strongest([v.action for v in verdicts])
        refusal = self.refusal_message if action == "block" and context.stage == "input" else None
        return GuardResult(
            stage=context.stage,
            action=action,
            verdicts=tuple(verdicts),
            text=text,
            refusal=refusal,
            elapsed_s=time.perf_counter() - started,
        )


def scan(
    texts: Iterable[str] | Sequence[str],
    stage: Stage = "input",
    *,
    stack: GuardStack | None = None,
    source: Source = "user",
) -> list[GuardResult]:
    """Run a stack over many texts: what `tether guard scan` calls.

    Args:
        texts: the texts.
        stage: the stage to run (`input`, `output`; for `tool_call`, each text is a JSON object
            `{"tool": name, "arguments": {...}}` or just the arguments).
        stack: the stack; `default_stack()` when omitted.
        source: who wrote the texts (`tool_result` to test documents for indirect injection).

    Returns:
        One result per text, in order.
    """
    import json

    if stack is None:
        from ._config import default_stack

        stack = default_stack()
    results: list[GuardResult] = []
    for text in texts:
        context = GuardContext(stage=stage, source=source)
        if stage == "tool_call":
            subject: str | ToolCallCheck = _tool_call_from_text(text, json)
        else:
            subject = text
        results.append(stack.check(subject, context))
    return results


def _tool_call_from_text(text: str, json: Any) -> ToolCallCheck:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return ToolCallCheck(tool_name="", arguments={"text": text})
    if isinstance(value, dict) and isinstance(value.get("arguments"), dict):
        return ToolCallCheck(
            tool_name=str(value.get("tool") or value.get("name") or ""), arguments=value["arguments"]
        )
    return ToolCallCheck(tool_name="", arguments=value if isinstance(value, dict) else {"value": value})
