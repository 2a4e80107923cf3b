"""Workers: processes that claim queued runs with leases, keep them with heartbeats, and resume them.

```python
from tether.workers import Worker, submit

run_id = await submit(store, agent, "refund order 1042", idempotency_key="refund-1042")
await Worker(store, concurrency=8).run()      # usually: `tether worker --store URL`
```
"""

from ._ops import cancel as cancel
from ._ops import submit as submit
from ._worker import Worker as Worker
from ._worker import WorkerStats as WorkerStats

__all__ = ["Worker", "WorkerStats", "cancel", "submit"]
