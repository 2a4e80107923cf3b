"""Telemetry: structured logs (and, in later issues, OpenTelemetry spans and metrics)."""

from ._logging import configure_logging as configure_logging
from ._logging import get_logger as get_logger
from ._redact import redact_for_log as redact_for_log

__all__ = ["configure_logging", "get_logger", "redact_for_log"]
