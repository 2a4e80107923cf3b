"""The error a governance backend raises when its shared state cannot be reached."""

from __future__ import annotations

from ..exceptions import TetherError

__all__ = ["GovernanceUnavailable"]


class GovernanceUnavailable(TetherError):
    """The shared backend of a rate limiter, budget ledger or kill switch (Redis) cannot be reached.

    Retryable: the server may come back. A caller that cannot reach it must not treat the control as
    passed (fail closed): an unreachable kill switch is not a released one.
    """

    retryable = True
