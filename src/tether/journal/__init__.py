"""The run journal: typed events, the store contract and its backends, and replay."""

from ._events import TERMINAL_STATUSES as TERMINAL_STATUSES
from ._events import AnswerRejected as AnswerRejected
from ._events import ApprovalDecided as ApprovalDecided
from ._events import ApprovalRequested as ApprovalRequested
from ._events import ContextTrimmed as ContextTrimmed
from ._events import Event as Event
from ._events import GuardChecked as GuardChecked
from ._events import ModelFailed as ModelFailed
from ._events import ModelResponded as ModelResponded
from ._events import RunFinished as RunFinished
from ._events import RunResumed as RunResumed
from ._events import RunStarted as RunStarted
from ._events import RunStatus as RunStatus
from ._events import StoredEvent as StoredEvent
from ._events import TerminalStatus as TerminalStatus
from ._events import ToolCompleted as ToolCompleted
from ._events import ToolFailed as ToolFailed
from ._events import ToolStarted as ToolStarted
from ._events import UsageCharged as UsageCharged
from ._events import call_hash as call_hash
from ._events import event_adapter as event_adapter
from ._open import DEFAULT_STORE as DEFAULT_STORE
from ._open import open_store as open_store
from ._open import store_url as store_url
from ._store import Lease as Lease
from ._store import RunInfo as RunInfo
from ._store import Store as Store
from ._store import chain_hash as chain_hash
from ._store import wake_time as wake_time
from .stores.memory import MemoryStore as MemoryStore
from .stores.sqlite import SQLiteStore as SQLiteStore

__all__ = [
    "DEFAULT_STORE",
    "TERMINAL_STATUSES",
    "AnswerRejected",
    "ApprovalDecided",
    "ApprovalRequested",
    "ContextTrimmed",
    "Event",
    "GuardChecked",
    "Lease",
    "MemoryStore",
    "ModelFailed",
    "ModelResponded",
    "RunFinished",
    "RunInfo",
    "RunResumed",
    "RunStarted",
    "RunStatus",
    "SQLiteStore",
    "Store",
    "StoredEvent",
    "TerminalStatus",
    "ToolCompleted",
    "ToolFailed",
    "ToolStarted",
    "UsageCharged",
    "call_hash",
    "chain_hash",
    "event_adapter",
    "open_store",
    "store_url",
    "wake_time",
]
