"""Text for log lines with personal data and credentials taken out.

An agent that asks for its prompts and responses to be logged with PII redacted gets them through
`redact_for_log`: the guardrails' LLM-free recognisers (checksums where a format has one, so card and
account numbers are found with few false alarms) replace each finding with a placeholder such as
`[EMAIL]` or `[CREDIT_CARD]`, and known credential formats (API keys, tokens) go the same way.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from ..exceptions import ConfigError

__all__ = ["redact_for_log"]

DEFAULT_LOG_CHARS = 4000
"""How much of one text a log line carries by default: logs are for reading, the journal keeps it all."""
_OVERLAP = 256
"""Characters scanned past the cut, so a finding that straddles it is still recognised and replaced."""


@lru_cache(maxsize=4)
def _guards(max_chars: int) -> tuple[Any, ...]:
    # imported here: the guardrails load their pattern tables, which a process that never logs a prompt
    # should not pay for, and telemetry is imported by nearly everything
    from ..guardrails import PIIGuard, SecretsGuard

    # credentials first, as the guardrail stack orders them: a key must not be half-read as a phone number
    return (
        SecretsGuard(entropy=False, stages=("output",), name="log-secrets", max_chars=max_chars),
        PIIGuard(stages=("output",), name="log-pii", max_chars=max_chars),
    )


def redact_for_log(text: str, *, max_chars: int = DEFAULT_LOG_CHARS) -> str:
    """`text` as a log line may carry it: personal data and credentials replaced by placeholders, and at
    most `max_chars` characters of it (a longer text ends with how much was left out).

    Example:
        ```python
        _log.debug("model responded", run_id=run_id, text=redact_for_log(response.text))
        # "Refund sent to [EMAIL], card [CREDIT_CARD]"
        ```

    Args:
        text: a prompt, a response, a tool result.
        max_chars: the most characters of `text` to keep.

    Raises:
        ConfigError: `max_chars` is not positive.
    """
    if not isinstance(max_chars, int) or isinstance(max_chars, bool) or max_chars <= 0:
        raise ConfigError(f"redact_for_log max_chars must be a positive whole number; got {max_chars!r}")
    if not text:
        return text
    from ..guardrails import GuardContext

    scanned = text[: max_chars + _OVERLAP]
    context = GuardContext(stage="output", source="model")
    for guard in _guards(max_chars + _OVERLAP):
        for verdict in guard.check(scanned, context):
            if verdict.redacted_text is not None:
                scanned = verdict.redacted_text
    if len(text) <= max_chars:
        return scanned
    return f"{scanned[:max_chars]} … [{len(text) - max_chars} more characters not logged]"
