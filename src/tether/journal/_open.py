"""Open a store from a URL, as given to `--store` or `TETHER_STORE`."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

from ..exceptions import ConfigError
from ._store import Store

__all__ = ["DEFAULT_STORE", "open_store", "store_url"]

DEFAULT_STORE = "sqlite:///.tether/tether.db"
"""`./.tether/tether.db`, relative to the working directory."""


def store_url(url: str | None = None) -> str:
    """The store URL to use: the one given, else `TETHER_STORE`, else the default SQLite file."""
    return url or os.environ.get("TETHER_STORE") or DEFAULT_STORE


def open_store(url: str | None = None) -> Store:
    """Open the store a URL names.

    Accepted forms: `memory:`, `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, a plain file
    path (`runs.db`), each SQLite form optionally with `?durability=power-loss`; and
    `postgresql://user@host:5432/dbname` (or `postgres://`), with libpq's own query parameters plus
    tether's `schema` (default `tether`), `min_size` and `max_size` (the connection pool).

    Raises:
        ConfigError: the URL names no store tether knows.
        StoreUnavailable: the store exists but cannot be opened.
    """
    url = store_url(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory" or url == "memory":
        from .stores.memory import MemoryStore

        return MemoryStore()
    if scheme in ("sqlite", "") or (len(scheme) == 1 and os.name == "nt"):
        from .stores.sqlite import SQLiteStore

        if scheme == "sqlite":
            # sqlite:///rel.db → "rel.db"; sqlite:////abs.db → "/abs.db" (SQLAlchemy's convention)
            raw = url[len("sqlite:") :].split("?", 1)[0]
            path = raw[3:] if raw.startswith("///") else raw.lstrip("/") if raw.startswith("//") else raw
        else:
            path = parts.path
        if not path:
            raise ConfigError(f"store URL {url!r} names no file; use sqlite:///path/to/tether.db")
        query = parse_qs(parts.query)
        durability = query.get("durability", ["crash"])[0]
        if durability not in ("crash", "power-loss"):
            raise ConfigError(f"durability must be 'crash' or 'power-loss' in {url!r}; got {durability!r}")
        return SQLiteStore(Path(path), durability=durability)  # type: ignore[arg-type]  # checked above
    if scheme in ("postgres", "postgresql"):
        return _open_postgres(url)
    raise ConfigError(
        f"unknown store {url!r}; use memory:, sqlite:///path/to/tether.db, a file path or "
        "postgresql://user@host/dbname "
        "(set it with --store or TETHER_STORE)"
    )


_POSTGRES_OPTIONS = ("schema", "min_size", "max_size")
"""Query parameters of a `postgresql://` URL that configure tether; the others go to libpq."""


def _without_password(url: str) -> str:
    """The URL as it may appear in an error message or a log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{hostport}"))


def _open_postgres(url: str) -> Store:
    shown = _without_password(url)
    try:
        from .stores.postgres import PostgresStore
    except ImportError as exc:
        raise ConfigError(f"{exc} (store {shown!r})") from None

    parts = urlsplit(url)
    libpq: list[tuple[str, str]] = []
    options: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _POSTGRES_OPTIONS:
            options[key] = value
        else:
            libpq.append((key, value))
    sizes: dict[str, int] = {}
    for key in ("min_size", "max_size"):
        if key in options:
            try:
                sizes[key] = int(options[key])
            except ValueError:
                raise ConfigError(
                    f"{key} must be a whole number in {shown!r}; got {options[key]!r}"
                ) from None
    return PostgresStore(
        urlunsplit(parts._replace(query=urlencode(libpq))), schema=options.get("schema") or "tether", **sizes
    )
