"""Models: one contract, one module per wire API.

`tether.models.openai_compat.OpenAICompatModel` (any OpenAI-compatible endpoint) and
`tether.models.llamacpp.LlamaCppModel` (the embedded model) are imported from their own modules so that
their optional dependencies load only when used.
"""

from ._base import Model as Model
from ._base import ModelSettings as ModelSettings
from ._base import TokenCallback as TokenCallback
from ._messages import AssistantMessage as AssistantMessage
from ._messages import Message as Message
from ._messages import ModelResponse as ModelResponse
from ._messages import SystemMessage as SystemMessage
from ._messages import ToolCall as ToolCall
from ._messages import ToolDefinition as ToolDefinition
from ._messages import ToolResultMessage as ToolResultMessage
from ._messages import Usage as Usage
from ._messages import UserMessage as UserMessage
from ._spec import check_model_spec as check_model_spec
from ._spec import model_from_spec as model_from_spec

__all__ = [
    "AssistantMessage",
    "Message",
    "Model",
    "ModelResponse",
    "ModelSettings",
    "SystemMessage",
    "TokenCallback",
    "ToolCall",
    "ToolDefinition",
    "ToolResultMessage",
    "Usage",
    "UserMessage",
    "check_model_spec",
    "model_from_spec",
]
