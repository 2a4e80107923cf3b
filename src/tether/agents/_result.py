"""What a run returns."""

from __future__ import annotations

from dataclasses import dataclass

from ..exceptions import RunError
from ..models import Usage

__all__ = ["RunResult"]


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """The outcome of a run (or of one execution of it, after a resume).

    Attributes:
        run_id: the run's id; `tether runs show RUN_ID` prints its journal.
        agent: the agent's name.
        status: the terminal status (`completed`, `failed`, `cancelled`, `max_steps`, `timed_out`,
            `budget_exceeded`, `blocked` (the input guardrails refused the request: `output` is the
            refusal)), or `suspended` (waiting for a human: see `waiting_for`) or `running`
            (handed back unfinished to the queue).
        reason: why the run ended, in one line.
        output: the final answer when `completed` (the refusal when `blocked`), else None.
        steps: model calls made over the whole run.
        usage: tokens used over the whole run.
        duration_s: wall time of this execution.
        store: where the journal is (for display).
        waiting_for: for a `suspended` run, the id of the approval request it waits on
            (`tether approvals show ID`).
        wake_at: for a `suspended` run, when its deadline's timer fires (seconds since the epoch).
    """

    run_id: str
    agent: str
    status: str
    reason: str
    output: str | None
    steps: int
    usage: Usage
    duration_s: float
    store: str = ""
    waiting_for: str | None = None
    wake_at: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    def raise_for_status(self) -> RunResult:
        """Return self when completed; otherwise raise `RunError` with the status and reason."""
        if not self.ok:
            raise RunError(
                f"run {self.run_id} ended {self.status}: {self.reason}",
                run_id=self.run_id,
                status=self.status,
                reason=self.reason,
            )
        return self
