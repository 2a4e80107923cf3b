"""Approvals: a policy decides each tool call by risk tier, confidence and reversibility."""

from ._policy import Action as Action
from ._policy import ApprovalPolicy as ApprovalPolicy
from ._policy import ExpiryAction as ExpiryAction
from ._policy import PolicyDecision as PolicyDecision
from ._policy import ProposedCall as ProposedCall
from ._policy import TierPolicy as TierPolicy
from ._policy import load_policy as load_policy

__all__ = ["Action", "ApprovalPolicy", "ExpiryAction", "PolicyDecision", "ProposedCall", "TierPolicy", "load_policy"]
