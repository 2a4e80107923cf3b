"""Model strings: one string names any model tether can call."""

from __future__ import annotations

import os

from ..exceptions import ConfigError
from ._base import Model

__all__ = ["check_model_spec", "model_from_spec"]

_PROVIDERS = ("local", "openai")


def check_model_spec(spec: str) -> tuple[str, str]:
    """Split a model string into (provider, rest) without building the model.

    Raises:
        ConfigError: the string names no model tether knows.
    """
    provider, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ConfigError(
            f"model {spec!r} is not a model string; use local:qwen2.5-coder-0.5b or openai:MODEL@http://host/v1"
        )
    if provider not in _PROVIDERS:
        raise ConfigError(f"unknown model provider {provider!r} in {spec!r}; known: {', '.join(_PROVIDERS)}")
    return provider, rest


def model_from_spec(spec: str) -> Model:
    """Build a model from its string.

    Forms:
        `local:qwen2.5-coder-0.5b` — the embedded llama.cpp model (`local:qwen2.5-coder-1.5b` for the
        standard tier); `openai:MODEL@http://host:port/v1` — any OpenAI-compatible endpoint
        (`openai:MODEL` uses `OPENAI_BASE_URL`).

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
        return OpenAICompatModel(model, base_url=base_url)
    raise AssertionError(f"provider {provider!r} is listed but not built")
