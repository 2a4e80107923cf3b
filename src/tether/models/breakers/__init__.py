"""Shared circuit-breaker state, one module per backend, imported only when used (optional dependencies):

- `tether.models.breakers.redis.RedisBreakerState` (`pip install 'tether[redis]'`)
- `tether.models.breakers.postgres.PostgresBreakerState` (`pip install 'tether[postgres]'`)

The in-memory state, for one process, is `tether.models.InMemoryBreakerState`.
"""
