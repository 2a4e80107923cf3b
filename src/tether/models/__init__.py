"""Models: one contract, one module per wire API.

`tether.models.openai_compat.OpenAICompatModel` (any OpenAI-compatible endpoint),
`tether.models.anthropic.AnthropicModel` (the Anthropic Messages API) and
`tether.models.llamacpp.LlamaCppModel` (the embedded model) are imported from their own modules so that
their optional dependencies load only when used. Named models come from a models file (`load_models`,
`TETHER_MODELS`).

Resilience wraps a model in another (each is a `Model`): `RetryModel` (backoff with full jitter,
`Retry-After`), `CircuitBreakerModel` (fail fast while a provider is down; state shared by workers through
`tether.models.breakers`), `FallbackModel([a, b])`; `resilient(model)` is retries around a breaker.
Every try is an `Attempt` on `ModelResponse.attempts` (or `ModelError.attempts` when all failed).
"""

from ._base import Model as Model
from ._base import ModelSettings as ModelSettings
from ._base import TokenCallback as TokenCallback
from ._breaker import BreakerPermit as BreakerPermit
from ._breaker import BreakerPolicy as BreakerPolicy
from ._breaker import BreakerRecord as BreakerRecord
from ._breaker import BreakerSnapshot as BreakerSnapshot
from ._breaker import BreakerState as BreakerState
from ._breaker import BreakerTransition as BreakerTransition
from ._breaker import CircuitBreaker as CircuitBreaker
from ._breaker import CircuitBreakerModel as CircuitBreakerModel
from ._breaker import InMemoryBreakerState as InMemoryBreakerState
from ._cache import CachedModel as CachedModel
from ._cache import CacheEntry as CacheEntry
from ._cache import CacheStats as CacheStats
from ._cache import CacheStore as CacheStore
from ._cache import MemoryCacheStore as MemoryCacheStore
from ._cache import RedisCacheStore as RedisCacheStore
from ._config import MODELS_ENV as MODELS_ENV
from ._config import ModelConfig as ModelConfig
from ._config import ModelPriceConfig as ModelPriceConfig
from ._config import ModelsConfig as ModelsConfig
from ._config import Tier as Tier
from ._config import configured_models as configured_models
from ._config import load_models as load_models
from ._fallback import FallbackModel as FallbackModel
from ._fallback import falls_back as falls_back
from ._hybrid import answer_problem as answer_problem
from ._judge import DEFAULT_JUDGE_MODEL as DEFAULT_JUDGE_MODEL
from ._judge import LLMJudgeError as LLMJudgeError
from ._judge import LLMJudgeGuard as LLMJudgeGuard
from ._hybrid import sensitive_reason as sensitive_reason
from ._messages import AssistantMessage as AssistantMessage
from ._messages import Attempt as Attempt
from ._messages import AttemptOutcome as AttemptOutcome
from ._messages import Message as Message
from ._messages import ModelResponse as ModelResponse
from ._messages import Route as Route
from ._messages import SystemMessage as SystemMessage
from ._messages import ToolCall as ToolCall
from ._messages import ToolDefinition as ToolDefinition
from ._messages import ToolResultMessage as ToolResultMessage
from ._messages import Usage as Usage
from ._messages import UserMessage as UserMessage
from ._retry import RetryModel as RetryModel
from ._retry import RetryPolicy as RetryPolicy
from ._retry import resilient as resilient
from ._router import HINTS as HINTS
from ._router import Complexity as Complexity
from ._router import Router as Router
from ._router import Split as Split
from ._router import TierClassifier as TierClassifier
from ._router import estimate_complexity as estimate_complexity
from ._spec import check_model_spec as check_model_spec
from ._spec import model_from_spec as model_from_spec

__all__ = [
    "DEFAULT_JUDGE_MODEL",
    "HINTS",
    "MODELS_ENV",
    "AssistantMessage",
    "Attempt",
    "AttemptOutcome",
    "BreakerPermit",
    "BreakerPolicy",
    "BreakerRecord",
    "BreakerSnapshot",
    "BreakerState",
    "BreakerTransition",
    "CacheEntry",
    "CacheStats",
    "CacheStore",
    "CachedModel",
    "CircuitBreaker",
    "CircuitBreakerModel",
    "Complexity",
    "FallbackModel",
    "InMemoryBreakerState",
    "LLMJudgeError",
    "LLMJudgeGuard",
    "MemoryCacheStore",
    "Message",
    "Model",
    "ModelConfig",
    "ModelPriceConfig",
    "ModelResponse",
    "ModelSettings",
    "ModelsConfig",
    "RedisCacheStore",
    "RetryModel",
    "RetryPolicy",
    "Route",
    "Router",
    "Split",
    "SystemMessage",
    "Tier",
    "TierClassifier",
    "TokenCallback",
    "ToolCall",
    "ToolDefinition",
    "ToolResultMessage",
    "Usage",
    "UserMessage",
    "answer_problem",
    "check_model_spec",
    "configured_models",
    "estimate_complexity",
    "falls_back",
    "load_models",
    "model_from_spec",
    "resilient",
    "sensitive_reason",
]
