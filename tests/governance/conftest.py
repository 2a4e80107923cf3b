from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

REDIS_URL = "redis://127.0.0.1:6379/0"
_START_REDIS = (
    "start it with `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no` "
    "(.ci/run does this)"
)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own on the test server; every key under it is deleted afterwards.

    Fails the test (never skips it) when the server cannot be reached.
    """
    try:
        import redis
    except ImportError:
        pytest.fail("redis is not installed: pip install -e '.[redis]'", pytrace=False)
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({exc}); {_START_REDIS}", pytrace=False)
    prefix = f"tether-test:{secrets.token_hex(6)}:"
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()
