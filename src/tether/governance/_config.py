"""Governance from a TOML file, so that every worker and the CLI enforce the same controls.

```toml
backend = "redis://127.0.0.1:6379/0"     # or "memory" (one process), or "postgresql://USER@HOST/DB"
prefix = "myapp:"                        # Redis only: prepended to every key (default "tether:")
kill_switch = true                       # default true

[budgets.run]                            # each run, over its whole life
max_tokens = 50_000
[budgets.user]                           # each user, per UTC day
max_tokens = 200_000
max_usd = 5.0
[budgets."user:intern"]                  # one user, on top of the budget above
max_usd = 0.50
[budgets.feature]                        # each feature (a run's metadata["feature"]), per UTC day
max_usd = 100.0
period = "total"                         # or "day" (the default for users and features)

[rate_limits.user]                       # each user's token bucket
per_minute = 30                          # or per_second = N, or capacity = N + refill_per_s = R
burst = 10                               # at most this many at once (default: the rate)
[rate_limits."feature:search"]
capacity = 5
refill_per_s = 0.5
[rate_limits.default]                    # keys no rule names (default: unlimited)
per_second = 20

[prices]                                 # or prices = "prices.toml", relative to this file
unknown = "error"
[prices.models."openai:gpt-4o-mini@*"]
input = 0.15                             # USD per million tokens
output = 0.60
```

A PostgreSQL backend keeps its tables in the schema named by `?schema=NAME` in the URL (default
`tether_governance`); `max_size=N` there sizes each control's connection pool.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._clock import Clock
from ..exceptions import ConfigError
from ._budgets import Budget, BudgetLedger
from ._bundle import Governance
from ._counters import Counters, InMemoryCounters
from ._killswitch import InMemoryKillSwitch, KillSwitch
from ._prices import PriceTable
from ._ratelimit import InMemoryRateLimiter, RateLimit, RateLimiter, RateLimits

__all__ = ["GOVERNANCE_ENV", "load_governance"]

GOVERNANCE_ENV = "TETHER_GOVERNANCE"
"""The environment variable naming the governance file when no path is given."""

_TOP_KEYS = ("backend", "prefix", "kill_switch", "budgets", "rate_limits", "prices")
_BUDGET_SCOPES = ("run", "user", "feature")
_BUDGET_KEYS = ("max_tokens", "max_usd", "period")
_RATE_KINDS = ("user", "feature", "tool")
_RATE_KEYS = ("capacity", "refill_per_s", "per_second", "per_minute", "burst")
_PG_OPTIONS = ("schema", "max_size")


class _File:
    """Where the settings come from, for error messages that name the file and the key."""

    def __init__(self, path: Path):
        self.path = path

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"governance file {str(self.path)!r}, {key}: {problem}")

    def table(self, value: Any, key: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(key, f"must be a table ([{key}]); got {value!r}")
        return value

    def unknown(self, table: Mapping[str, Any], allowed: tuple[str, ...], key: str) -> None:
        extra = sorted(set(table) - set(allowed))
        if extra:
            where = f"[{key}]" if key else "the top level"
            raise self.error(
                f"{key}.{extra[0]}" if key else extra[0],
                f"unknown key{'s' if len(extra) > 1 else ''} {extra} in {where}; known: {list(allowed)}",
            )

    def number(self, value: Any, key: str, *, whole: bool = False, positive: bool = False) -> float:
        kind = "a whole number" if whole else "a number"
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (whole and not isinstance(value, int))
        ):
            raise self.error(key, f"must be {kind}; got {value!r}")
        if positive and not value > 0:
            raise self.error(key, f"must be positive; got {value!r}")
        if value < 0:
            raise self.error(key, f"must be 0 or more; got {value!r}")
        return value


def load_governance(path: str | Path | None = None, *, clock: Clock | None = None) -> Governance:
    """Build the governance a governance file describes (the format is in this module's docstring).

    Nothing is contacted here: shared backends connect on first use, so a file can be checked offline.

    Args:
        path: the TOML file; None reads the path from `TETHER_GOVERNANCE`.
        clock: the time source of in-memory controls and of budget days (tests).

    Raises:
        ConfigError: no file given, the file is missing or not TOML, or a key or value is wrong (the
            message names the file and the key).
    """
    if path is None:
        path = os.environ.get(GOVERNANCE_ENV) or None
        if path is None:
            raise ConfigError(f"no governance file: pass one (--governance FILE) or set {GOVERNANCE_ENV}")
    source = _File(Path(path))
    try:
        data = tomllib.loads(source.path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no governance file {str(source.path)!r}; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read governance file {str(source.path)!r}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"governance file {str(source.path)!r} is not valid TOML: {exc}") from None
    source.unknown(data, _TOP_KEYS, "")

    budgets = _budgets(source, data.get("budgets", {}))
    limits = _rate_limits(source, data.get("rate_limits", {}))
    prices = _prices(source, data["prices"]) if "prices" in data else None
    kill = data.get("kill_switch", True)
    if not isinstance(kill, bool):
        raise source.error("kill_switch", f"must be true or false; got {kill!r}")

    backend = data.get("backend", "memory")
    if not isinstance(backend, str):
        raise source.error("backend", f"must be a string; got {backend!r}")
    prefix = data.get("prefix")
    if prefix is not None and (not isinstance(prefix, str) or not prefix):
        raise source.error("prefix", f"must be a non-empty string; got {prefix!r}")
    scheme = urlsplit(backend).scheme.lower()
    if prefix is not None and scheme not in ("redis", "rediss"):
        raise source.error(
            "prefix", "applies to a Redis backend only; a PostgreSQL backend takes ?schema=NAME in its URL"
        )

    counters: Counters | None = None
    limiter: RateLimiter | None = None
    kill_switch: KillSwitch | None = None
    needs_counters = bool(budgets)
    if backend == "memory":
        counters = InMemoryCounters(clock=clock) if needs_counters else None
        limiter = InMemoryRateLimiter(limits, clock=clock) if limits is not None else None
        kill_switch = InMemoryKillSwitch(clock=clock) if kill else None
    elif scheme in ("redis", "rediss"):
        try:
            from . import redis as backend_module
        except ImportError as exc:
            raise source.error("backend", str(exc)) from None
        options: dict[str, Any] = {"url": backend, "prefix": prefix or "tether:"}
        try:
            counters = backend_module.RedisCounters(**options) if needs_counters else None
            limiter = backend_module.RedisRateLimiter(limits, **options) if limits is not None else None
            kill_switch = backend_module.RedisKillSwitch(**options, clock=clock) if kill else None
        except ValueError as exc:  # redis-py's verdict on a malformed URL
            raise source.error("backend", f"not a usable Redis URL {backend!r}: {exc}") from None
    elif scheme in ("postgresql", "postgres"):
        try:
            from . import postgres as pg
        except ImportError as exc:
            raise source.error("backend", str(exc)) from None
        url, schema, max_size = _postgres_url(source, backend)
        options = {"url": url, "schema": schema or pg.DEFAULT_SCHEMA, "max_size": max_size}
        try:
            counters = pg.PostgresCounters(**options) if needs_counters else None
            limiter = pg.PostgresRateLimiter(limits, **options) if limits is not None else None
            kill_switch = pg.PostgresKillSwitch(**options, clock=clock) if kill else None
        except ConfigError as exc:
            raise source.error("backend", str(exc)) from None
    else:
        raise source.error(
            "backend",
            f'unknown backend {backend!r}; use "memory" (one process), "redis://HOST:PORT/DB" or '
            '"postgresql://USER@HOST/DB" (shared by every worker)',
        )
    ledger = BudgetLedger(budgets, counters=counters, clock=clock) if counters is not None else None
    return Governance(limiter=limiter, ledger=ledger, kill_switch=kill_switch, prices=prices)


def _budgets(source: _File, section: Any) -> list[Budget]:
    table = source.table(section, "budgets")
    found: list[Budget] = []
    for name, entry in table.items():
        key = f"budgets.{name}" if ":" not in name else f'budgets."{name}"'
        scope, sep, target = name.partition(":")
        if scope not in _BUDGET_SCOPES or (sep and not target):
            raise source.error(
                key, "names no budget; use [budgets.run], [budgets.user], [budgets.feature] or a target "
                'such as [budgets."user:alice"]',
            )  # fmt: skip
        if scope == "run" and sep:
            raise source.error(key, "a run budget applies to every run; it takes no target")
        body = source.table(entry, key)
        source.unknown(body, _BUDGET_KEYS, key)
        if "max_tokens" not in body and "max_usd" not in body:
            raise source.error(key, "needs max_tokens, max_usd or both")
        max_tokens = body.get("max_tokens")
        max_usd = body.get("max_usd")
        if max_tokens is not None:
            source.number(max_tokens, f"{key}.max_tokens", whole=True)
        if max_usd is not None:
            source.number(max_usd, f"{key}.max_usd")
        period = body.get("period")
        if period is not None and period not in ("total", "day"):
            raise source.error(f"{key}.period", f'must be "total" or "day"; got {period!r}')
        if scope == "run" and period == "day":
            raise source.error(
                f"{key}.period", 'a run budget covers the whole run; use "total" or leave it out'
            )
        try:
            found.append(
                Budget(
                    scope=scope,  # type: ignore[arg-type]  # checked against _BUDGET_SCOPES above
                    max_tokens=max_tokens,
                    max_usd=float(max_usd) if max_usd is not None else None,
                    period=period,
                    target=target or None,
                )
            )
        except ConfigError as exc:
            raise source.error(key, str(exc)) from None
    return found


def _rate_limits(source: _File, section: Any) -> RateLimits | None:
    table = source.table(section, "rate_limits")
    if not table:
        return None
    rules: dict[str, RateLimit] = {}
    default: RateLimit | None = None
    for name, entry in table.items():
        key = f"rate_limits.{name}" if ":" not in name else f'rate_limits."{name}"'
        kind, sep, rest = name.partition(":")
        if name != "default" and (kind not in _RATE_KINDS or (sep and not rest)):
            raise source.error(
                key, "names no bucket; use [rate_limits.user], [rate_limits.feature], [rate_limits.tool], "
                '[rate_limits.default] or one key such as [rate_limits."user:alice"]',
            )  # fmt: skip
        limit = _rate_limit(source, source.table(entry, key), key)
        if name == "default":
            default = limit
        else:
            rules[name] = limit
    return RateLimits(rules=rules, default=default)


def _rate_limit(source: _File, body: Mapping[str, Any], key: str) -> RateLimit:
    source.unknown(body, _RATE_KEYS, key)
    given = [k for k in ("per_second", "per_minute", "refill_per_s") if k in body]
    if len(given) != 1:
        raise source.error(
            key, "give exactly one rate: per_second = N, per_minute = N, or capacity = N with "
            "refill_per_s = R" + (f"; got {given}" if given else ""),
        )  # fmt: skip
    for name in _RATE_KEYS:
        if name in body:
            source.number(body[name], f"{key}.{name}", positive=True)
    if "refill_per_s" in body:
        if "burst" in body:
            raise source.error(
                f"{key}.burst", "goes with per_second or per_minute; with refill_per_s, use capacity"
            )
        if "capacity" not in body:
            raise source.error(key, "refill_per_s needs capacity: the most tokens the bucket holds")
        return RateLimit(capacity=float(body["capacity"]), refill_per_s=float(body["refill_per_s"]))
    if "capacity" in body:
        raise source.error(
            f"{key}.capacity", "goes with refill_per_s; with per_second or per_minute, use burst"
        )
    burst = float(body["burst"]) if "burst" in body else None
    if "per_second" in body:
        return RateLimit.per_second(float(body["per_second"]), burst=burst)
    return RateLimit.per_minute(float(body["per_minute"]), burst=burst)


def _prices(source: _File, section: Any) -> PriceTable:
    if isinstance(section, str):
        path = Path(section)
        if not path.is_absolute():
            path = source.path.parent / path
        try:
            return PriceTable.from_toml(path)
        except ConfigError as exc:
            raise source.error("prices", str(exc)) from None
    table = source.table(section, "prices")
    try:
        return PriceTable.from_dict(table, source="[prices]")
    except ConfigError as exc:
        raise source.error("prices", str(exc)) from None


def _postgres_url(source: _File, url: str) -> tuple[str, str | None, int]:
    """The libpq URL, the schema and the pool size from a backend URL's query string."""
    parts = urlsplit(url)
    libpq: list[tuple[str, str]] = []
    options: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _PG_OPTIONS:
            options[key] = value
        else:
            libpq.append((key, value))
    max_size = 4
    if "max_size" in options:
        try:
            max_size = int(options["max_size"])
        except ValueError:
            max_size = 0
        if max_size < 1:
            raise source.error(
                "backend", f"max_size must be a whole number of at least 1; got {options['max_size']!r}"
            )
    return urlunsplit(parts._replace(query=urlencode(libpq))), options.get("schema") or None, max_size
