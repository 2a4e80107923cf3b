"""Named models from a TOML file, so that agents say what a model is for rather than where it runs.

```toml
# models.toml; export TETHER_MODELS=models.toml, then Agent(..., model="support-fast")
[models.support-fast]
model = "anthropic:claude-haiku-4-5"
tier = "fast"
timeout_s = 30                          # the longest the endpoint may stay silent
api_key_env = "SUPPORT_ANTHROPIC_KEY"   # the environment variable holding its key
price = { input = 1.00, output = 5.00 } # USD per million tokens (`cached` too, optionally)

[models.on-host]
model = "local:qwen2.5-coder-1.5b"
tier = "standard"
context_window = 8192
```

A name is anything without a `:` (a `:` makes a model string). `private` says that requests sent to the
model stay on this host: it defaults to true for `local:` models and false for the rest, and marking a
remote endpoint private is a statement about where that endpoint runs, which tether cannot check.
The tier, price, privacy and context window are read by routing, cost and context management; a model
built from its name gets the timeout and API key.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from ..exceptions import ConfigError
from ._base import Model
from ._spec import build_model, check_model_spec

__all__ = [
    "MODELS_ENV",
    "ModelConfig",
    "ModelPriceConfig",
    "ModelsConfig",
    "Tier",
    "configured_models",
    "load_models",
]

MODELS_ENV = "TETHER_MODELS"
"""The environment variable naming the models file that model names are looked up in."""

Tier = Literal["fast", "standard", "reasoning"]
_TIERS: tuple[str, ...] = get_args(Tier)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEYS = ("model", "tier", "private", "timeout_s", "api_key_env", "price", "context_window")
_PRICE_KEYS = ("input", "output", "cached")
_REMOTE = ("openai", "anthropic")


@dataclass(frozen=True, kw_only=True)
class ModelPriceConfig:
    """What a configured model charges, in USD per million tokens (`cached`: per million prompt tokens
    read from a cache; None charges them as input)."""

    input: float
    output: float
    cached: float | None = None


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """One named model of a models file.

    Attributes:
        name: the name agents use (`support-fast`).
        model: the model string it stands for (`anthropic:claude-haiku-4-5`).
        tier: `fast`, `standard` or `reasoning`, for the router; None: not in any tier.
        private: requests to it stay on this host (sensitive data may go to it).
        timeout_s: the longest the endpoint may stay silent (remote models only).
        api_key_env: the environment variable holding its API key (remote models only).
        price: USD per million tokens; None: unpriced (local models are free).
        context_window: the tokens its context holds, for context management; None: unknown.
        source: the file it was read from.
    """

    name: str
    model: str
    tier: Tier | None = None
    private: bool = False
    timeout_s: float | None = None
    api_key_env: str | None = None
    price: ModelPriceConfig | None = None
    context_window: int | None = None
    source: Path | None = None

    @property
    def provider(self) -> str:
        """`local`, `openai` or `anthropic`."""
        return self.model.partition(":")[0]

    def build(self) -> Model:
        """The model, with this entry's timeout and API key.

        Raises:
            ConfigError: the API key's environment variable is not set.
        """
        api_key = None
        if self.api_key_env is not None:
            api_key = os.environ.get(self.api_key_env)
            if not api_key:
                raise ConfigError(
                    f"model {self.name!r}{_in_file(self.source)} reads its API key from ${self.api_key_env}, "
                    "which is not set; export it, or change api_key_env"
                )
        return build_model(self.model, api_key=api_key, timeout_s=self.timeout_s)


@dataclass(frozen=True, kw_only=True)
class ModelsConfig:
    """The named models of one file.

    Attributes:
        models: the entries by name, in file order.
        source: the file they were read from (None when built in code).
    """

    models: Mapping[str, ModelConfig] = field(default_factory=dict)
    source: Path | None = None

    def __contains__(self, name: object) -> bool:
        return name in self.models

    def __iter__(self) -> Iterator[ModelConfig]:
        return iter(self.models.values())

    def __len__(self) -> int:
        return len(self.models)

    def entry(self, name: str) -> ModelConfig:
        """The entry named `name`.

        Raises:
            ConfigError: no entry has that name (the message lists the names there are).
        """
        found = self.models.get(name)
        if found is None:
            known = ", ".join(sorted(self.models)) or "none"
            origin = f"models file {str(self.source)!r}" if self.source is not None else "the models config"
            raise ConfigError(
                f"unknown model name {name!r}; the {origin} defines: {known}. Add it there, or use a model "
                "string such as local:qwen2.5-coder-0.5b"
            )
        return found

    def tier(self, tier: Tier) -> list[ModelConfig]:
        """The entries of one tier, in file order."""
        return [m for m in self.models.values() if m.tier == tier]

    def build(self, name: str) -> Model:
        """The model named `name`, built with its entry's timeout and API key."""
        return self.entry(name).build()


def load_models(path: str | os.PathLike[str]) -> ModelsConfig:
    """Read a models file (TOML: one `[models.NAME]` table per model).

    Raises:
        ConfigError: the file is missing or not TOML, or an entry is wrong (the message names the file,
            the entry and the key).
    """
    source = Path(path)
    try:
        with source.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"models file {str(source)!r} does not exist; create it or fix the path") from None
    except OSError as exc:
        raise ConfigError(f"cannot read models file {str(source)!r}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"models file {str(source)!r} is not valid TOML: {exc}") from None
    extra = sorted(set(data) - {"models"})
    if extra:
        raise ConfigError(
            f"models file {str(source)!r} has unknown top-level keys {extra}; it holds one [models.NAME] "
            "table per model"
        )
    tables = data.get("models", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"models file {str(source)!r}: `models` must be a table of [models.NAME] tables")
    models = {name: _entry(name, table, source) for name, table in tables.items()}
    return ModelsConfig(models=models, source=source)


_cache: dict[tuple[str, int, int], ModelsConfig] = {}


def configured_models() -> ModelsConfig | None:
    """The models file `TETHER_MODELS` names, read again only when it changes; None when it is not set.

    Raises:
        ConfigError: the file is missing or wrong.
    """
    path = os.environ.get(MODELS_ENV)
    if not path:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        raise ConfigError(
            f"{MODELS_ENV}={path!r}, and no such file exists; create it or point {MODELS_ENV} at one"
        ) from None
    key = (os.path.abspath(path), stat.st_mtime_ns, stat.st_size)
    found = _cache.get(key)
    if found is None:
        _cache.clear()
        found = _cache[key] = load_models(path)
    return found


def _in_file(source: Path | None) -> str:
    return f" (models file {str(source)!r})" if source is not None else ""


def _entry(name: str, table: Any, source: Path) -> ModelConfig:
    where = f"models file {str(source)!r}, [models.{name}]"
    if not _NAME.match(name):
        raise ConfigError(
            f"{where}: a model name may hold letters, digits, '_', '.' and '-' (and no ':', which makes a "
            "model string); rename it"
        )
    if not isinstance(table, dict):
        raise ConfigError(f'{where} must be a table with at least model = "provider:..."')
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; the keys are {', '.join(_KEYS)}")
    spec = table.get("model")
    if not isinstance(spec, str) or ":" not in spec:
        raise ConfigError(
            f'{where}: model must be a model string such as "local:qwen2.5-coder-0.5b", '
            f'"openai:MODEL@http://host/v1" or "anthropic:MODEL"; got {spec!r}'
        )
    try:
        provider, _ = check_model_spec(spec)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    tier = table.get("tier")
    if tier is not None and tier not in _TIERS:
        raise ConfigError(f"{where}: tier must be one of {', '.join(_TIERS)}; got {tier!r}")
    private = table.get("private", provider == "local")
    if not isinstance(private, bool):
        raise ConfigError(f"{where}: private must be true or false; got {private!r}")
    timeout_s = _positive(table.get("timeout_s"), f"{where}: timeout_s", number=True)
    api_key_env = table.get("api_key_env")
    if api_key_env is not None and (not isinstance(api_key_env, str) or not _ENV_NAME.match(api_key_env)):
        raise ConfigError(f"{where}: api_key_env must name an environment variable; got {api_key_env!r}")
    if provider not in _REMOTE and (timeout_s is not None or api_key_env is not None):
        raise ConfigError(
            f"{where}: timeout_s and api_key_env apply to remote models (openai:, anthropic:); the embedded "
            "model needs no key and its calls are bounded by Limits.model_timeout_s"
        )
    context_window = _positive(table.get("context_window"), f"{where}: context_window", number=False)
    return ModelConfig(
        name=name,
        model=spec,
        tier=tier,
        private=private,
        timeout_s=timeout_s,
        api_key_env=api_key_env,
        price=_price(table.get("price"), where),
        context_window=int(context_window) if context_window is not None else None,
        source=source,
    )


def _positive(value: Any, what: str, *, number: bool) -> float | None:
    if value is None:
        return None
    kinds = (int, float) if number else (int,)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        kind = "a positive number" if number else "a positive whole number"
        raise ConfigError(f"{what} must be {kind}; got {value!r}")
    return float(value) if number else value


def _price(value: Any, where: str) -> ModelPriceConfig | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where}: price must be a table such as {{ input = 1.0, output = 5.0 }}; got {value!r}"
        )
    unknown = sorted(set(value) - set(_PRICE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown price keys {unknown}; the keys are input, output and cached")
    amounts: dict[str, float] = {}
    for key in _PRICE_KEYS:
        amount = value.get(key)
        if amount is None:
            if key != "cached":
                raise ConfigError(f"{where}: price needs {key} (USD per million {key} tokens)")
            continue
        if isinstance(amount, bool) or not isinstance(amount, int | float) or amount < 0:
            raise ConfigError(
                f"{where}: price.{key} must be USD per million tokens, 0 or more; got {amount!r}"
            )
        amounts[key] = float(amount)
    return ModelPriceConfig(**amounts)
