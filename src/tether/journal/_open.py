"""Open a store from a URL, as given to `--store` or `TETHER_STORE`."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

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
    path (`runs.db`), each SQLite form optionally with `?durability=power-loss`.

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
    raise ConfigError(
        f"unknown store {url!r}; use memory:, sqlite:///path/to/tether.db or a file path "
        "(set it with --store or TETHER_STORE)"
    )
