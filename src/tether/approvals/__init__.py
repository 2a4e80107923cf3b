"""Approvals: a policy decides each tool call by risk tier, confidence and reversibility; humans decide
what it asks them, and every request and decision is in the run's journal."""

from ._policy import Action as Action
from ._policy import ApprovalPolicy as ApprovalPolicy
from ._policy import ExpiryAction as ExpiryAction
from ._policy import PolicyDecision as PolicyDecision
from ._policy import ProposedCall as ProposedCall
from ._policy import TierPolicy as TierPolicy
from ._policy import load_policy as load_policy
from ._requests import ApprovalError as ApprovalError
from ._requests import ApprovalRequest as ApprovalRequest
from ._requests import Approvals as Approvals
from ._requests import OverrideRow as OverrideRow
from ._requests import RequestStatus as RequestStatus
from ._requests import flagged_calls as flagged_calls

__all__ = [
    "Action",
    "ApprovalError",
    "ApprovalPolicy",
    "ApprovalRequest",
    "Approvals",
    "ExpiryAction",
    "OverrideRow",
    "PolicyDecision",
    "ProposedCall",
    "RequestStatus",
    "TierPolicy",
    "flagged_calls",
    "load_policy",
]
