"""Guardrails: input, output and tool-call checks without a generative model.

Every guard returns `Verdict`s (category, score, spans, action); a `GuardStack` runs guards in order,
feeds redactions forward, stops at a block, and answers a blocked user with a configurable refusal.
`default_stack()` builds the LLM-free stack from a `GuardrailsConfig`: credential and PII redaction,
injection rules plus the MiniLM classifier (when `tether[embeddings]` is installed), abuse, exfiltration,
and tool-call limits. `scan()` runs a stack over many texts (`tether guard scan`).

Only `tether.exceptions` and `tether.embeddings` are imported from tether: this is the ground floor.
"""

from ._abuse import ABUSE_LANGUAGES as ABUSE_LANGUAGES
from ._abuse import AbuseGuard as AbuseGuard
from ._base import TextGuard as TextGuard
from ._base import check_action as check_action
from ._classifier import InjectionClassifier as InjectionClassifier
from ._classifier import InjectionClassifierGuard as InjectionClassifierGuard
from ._classifier import LogisticHead as LogisticHead
from ._config import GuardrailsConfig as GuardrailsConfig
from ._config import build_stack as build_stack
from ._config import classifier_available as classifier_available
from ._config import default_stack as default_stack
from ._injection import InjectionGuard as InjectionGuard
from ._injection import InjectionRule as InjectionRule
from ._injection import default_injection_rules as default_injection_rules
from ._output import CanaryGuard as CanaryGuard
from ._output import ExfiltrationGuard as ExfiltrationGuard
from ._output import SchemaGuard as SchemaGuard
from ._output import SensitiveTermsGuard as SensitiveTermsGuard
from ._output import canary_instruction as canary_instruction
from ._output import make_canary as make_canary
from ._pii import PII_ENTITIES as PII_ENTITIES
from ._pii import PIIEntity as PIIEntity
from ._pii import PIIGuard as PIIGuard
from ._pii import find_pii as find_pii
from ._scope import TopicScopeGuard as TopicScopeGuard
from ._secrets import SecretsGuard as SecretsGuard
from ._secrets import find_secrets as find_secrets
from ._stack import DEFAULT_REFUSAL as DEFAULT_REFUSAL
from ._stack import GuardResult as GuardResult
from ._stack import GuardStack as GuardStack
from ._stack import scan as scan
from ._text import excerpt as excerpt
from ._tools import AmountLimit as AmountLimit
from ._tools import ArgumentConstraint as ArgumentConstraint
from ._tools import DomainAllowlist as DomainAllowlist
from ._tools import PathAllowlist as PathAllowlist
from ._tools import ReadOnlySQL as ReadOnlySQL
from ._tools import ToolArgumentsGuard as ToolArgumentsGuard
from ._tools import ToolScopeGuard as ToolScopeGuard
from ._verdict import ACTIONS as ACTIONS
from ._verdict import Action as Action
from ._verdict import Guard as Guard
from ._verdict import GuardContext as GuardContext
from ._verdict import Source as Source
from ._verdict import Span as Span
from ._verdict import Stage as Stage
from ._verdict import ToolCallCheck as ToolCallCheck
from ._verdict import Verdict as Verdict
from ._verdict import strongest as strongest

__all__ = [
    "ABUSE_LANGUAGES",
    "ACTIONS",
    "DEFAULT_REFUSAL",
    "PII_ENTITIES",
    "AbuseGuard",
    "Action",
    "AmountLimit",
    "ArgumentConstraint",
    "CanaryGuard",
    "DomainAllowlist",
    "ExfiltrationGuard",
    "Guard",
    "GuardContext",
    "GuardResult",
    "GuardStack",
    "GuardrailsConfig",
    "InjectionClassifier",
    "InjectionClassifierGuard",
    "InjectionGuard",
    "InjectionRule",
    "LogisticHead",
    "PIIEntity",
    "PIIGuard",
    "PathAllowlist",
    "ReadOnlySQL",
    "SchemaGuard",
    "SecretsGuard",
    "SensitiveTermsGuard",
    "Source",
    "Span",
    "Stage",
    "TextGuard",
    "ToolArgumentsGuard",
    "ToolCallCheck",
    "ToolScopeGuard",
    "TopicScopeGuard",
    "Verdict",
    "build_stack",
    "canary_instruction",
    "check_action",
    "classifier_available",
    "default_injection_rules",
    "default_stack",
    "excerpt",
    "find_pii",
    "find_secrets",
    "make_canary",
    "scan",
    "strongest",
]
