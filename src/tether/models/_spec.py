"""Model strings: one string names any model tether can call."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..exceptions import ConfigError
from ._base import Model

if TYPE_CHECKING:
    from ._config import ModelConfig

__all__ = ["build_model", "check_model_spec", "model_from_spec"]

_PROVIDERS = ("local", "openai", "anthropic")


def check_model_spec(spec: str) -> tuple[str, str]:
    """Split a model string into (provider, rest) without building the model.

    A string without `:` is a model name, looked up in the models file `TETHER_MODELS` names; the
    model string it stands for is split.

    Raises:
        ConfigError: the string names no model tether knows.
    """
    if ":" not in spec:
        spec = _configured(spec).model
    provider, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ConfigError(
            f"model {spec!r} is not a model string; use local:qwen2.5-coder-0.5b, "
            "openai:MODEL@http://host/v1 or anthropic:MODEL"
        )
    if provider not in _PROVIDERS:
        raise ConfigError(f"unknown model provider {provider!r} in {spec!r}; known: {', '.join(_PROVIDERS)}")
    return provider, rest


def model_from_spec(spec: str) -> Model:
    """Build a model from its string.

    Forms:
        `local:qwen2.5-coder-0.5b` — the embedded llama.cpp model (`local:qwen2.5-coder-1.5b` for the
        standard tier); `openai:MODEL@http://host:port/v1` — any OpenAI-compatible endpoint
        (`openai:MODEL` uses `OPENAI_BASE_URL`); `anthropic:MODEL@http://host:port` — the Anthropic
        Messages API at that root (`anthropic:MODEL` uses `ANTHROPIC_BASE_URL`, else
        https://api.anthropic.com; the key comes from `ANTHROPIC_API_KEY`); a name without `:` — the
        model of that name in the models file `TETHER_MODELS` names, with its timeout and API key.

    Raises:
        ConfigError: the string names no model tether knows.
    """
    if ":" not in spec:
        return _configured(spec).build()
    return build_model(spec)


def build_model(spec: str, *, api_key: str | None = None, timeout_s: float | None = None) -> Model:
    """Build a model from a model string (not a name), with a remote endpoint's key and silence timeout.

    Raises:
        ConfigError: the string names no model tether knows.
    """
    provider, rest = check_model_spec(spec)
    if provider == "local":
        from .llamacpp import LlamaCppModel

        return LlamaCppModel(rest)
    if provider == "openai":
        from .openai_compat import OpenAICompatModel

        model, at, base_url = rest.partition("@")
        base_url = base_url if at else os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")
        if not model or not base_url:
            raise ConfigError(
                f"model {spec!r} needs a model name and a base URL: openai:MODEL@http://host/v1"
            )
        return OpenAICompatModel(model, base_url=base_url, api_key=api_key, timeout_s=timeout_s)
    if provider == "anthropic":
        from .anthropic import AnthropicModel

        model, at, base_url = rest.partition("@")
        if not model or (at and not base_url):
            raise ConfigError(
                f"model {spec!r} needs a model name, and a base URL after @ when there is one: "
                "anthropic:MODEL or anthropic:MODEL@http://host:port"
            )
        return AnthropicModel(model, base_url=base_url or None, api_key=api_key, timeout_s=timeout_s)
    raise AssertionError(f"provider {provider!r} is listed but not built")


def _configured(name: str) -> ModelConfig:
    from ._config import MODELS_ENV, configured_models

    models = configured_models()
    if models is None:
        raise ConfigError(
            f"model {name!r} is not a model string (local:qwen2.5-coder-0.5b, openai:MODEL@http://host/v1, "
            f"anthropic:MODEL) and {MODELS_ENV} is not set, so it cannot be a configured name; set "
            f"{MODELS_ENV} to a models file that defines it"
        )
    return models.entry(name)
