"""Structured logs: every line carries the run id; JSON when stderr is not a terminal."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

__all__ = ["configure_logging", "get_logger"]

_configured = False


def configure_logging(level: str | int | None = None, *, json: bool | None = None) -> None:
    """Set up tether's structured logging (idempotent; later calls reconfigure).

    Args:
        level: `debug`, `info`, `warning`... Defaults to `TETHER_LOG_LEVEL`, else `warning` so that
            libraries embedding tether stay quiet unless asked.
        json: one JSON object per line. Defaults to JSON when stderr is not a terminal
            (`TETHER_LOG_FORMAT=json|console` overrides).
    """
    global _configured
    level = level or os.environ.get("TETHER_LOG_LEVEL", "warning")
    if isinstance(level, str):
        numeric = logging.getLevelName(level.upper())
        if not isinstance(numeric, int):
            raise ValueError(f"unknown log level {level!r}; use debug, info, warning or error")
        level = numeric
    if json is None:
        fmt = os.environ.get("TETHER_LOG_FORMAT")
        json = fmt == "json" if fmt else not sys.stderr.isatty()
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(name: str, **bound: Any) -> Any:
    """A structlog logger for `name` with `bound` fields (e.g. `run_id`) on every line."""
    if not _configured:
        configure_logging()
    logger = structlog.get_logger(name)
    # binding materialises the logger with the configuration of that moment; a module-level logger
    # must stay lazy so that a later configure_logging() (the CLI's --log-level) applies to it
    return logger.bind(**bound) if bound else logger
