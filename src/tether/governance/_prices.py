"""Prices per model, and what one model call cost.

A `PriceTable` maps model strings (as recorded in the journal: `openai:gpt-4o-mini@https://…`,
`local:qwen2.5-coder-1.5b`) to USD per million tokens. Local models (`local:*`) cost no money whatever
the table says, though their tokens still count against token budgets.

An unpriced model is an error by default (`ConfigError` naming the priced ones): a budget in dollars
that silently counts an unknown model as free is no budget. `unknown="zero"` opts out: such calls
cost 0.0 and `quote()` marks them `priced=False`, so reports can say which spend is missing.
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..exceptions import ConfigError
from ..models import Usage

__all__ = ["Cost", "ModelPrice", "PriceTable", "UnknownModel"]

UnknownModel = Literal["error", "zero"]
_MTOK = 1_000_000


@dataclass(frozen=True, kw_only=True)
class ModelPrice:
    """What one model charges, in USD per million tokens.

    Attributes:
        input: per million prompt tokens evaluated.
        output: per million generated tokens.
        cached: per million prompt tokens served from a cache; None charges them as `input`.
    """

    input: float
    output: float
    cached: float | None = None

    def __post_init__(self) -> None:
        for name in ("input", "output", "cached"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int | float) or value < 0):
                raise ConfigError(f"ModelPrice.{name} must be a number of USD, 0 or more; got {value!r}")

    def cost(self, usage: Usage) -> float:
        """USD for `usage`. Cached tokens are part of `input_tokens` and charged at the cached rate."""
        cached = min(usage.cached_tokens, usage.input_tokens)
        cached_rate = self.input if self.cached is None else self.cached
        return (
            (usage.input_tokens - cached) * self.input
            + cached * cached_rate
            + usage.output_tokens * self.output
        ) / _MTOK


FREE = ModelPrice(input=0.0, output=0.0, cached=0.0)


@dataclass(frozen=True, kw_only=True)
class Cost:
    """The money one model call cost.

    Attributes:
        usd: the cost in USD.
        priced: False when the model has no price and the table counts it as free (`unknown="zero"`).
        model: the model string priced.
    """

    usd: float
    priced: bool
    model: str


@dataclass(frozen=True, kw_only=True)
class PriceTable:
    """Prices per model string.

    Args:
        prices: a price per model string. A key may be a glob (`openai:gpt-4o-mini@*`): an exact key wins,
            then the longest matching glob.
        unknown: what an unpriced, non-local model costs: `"error"` raises `ConfigError`, `"zero"`
            counts it as free and flags it (`Cost.priced` is False).

    Example:
        ```python
        prices = PriceTable(prices={"openai:gpt-4o-mini@*": ModelPrice(input=0.15, output=0.60)})
        prices.cost("openai:gpt-4o-mini@https://api.openai.com/v1", usage)
        ```
    """

    prices: Mapping[str, ModelPrice] = field(default_factory=dict)
    unknown: UnknownModel = "error"

    def __post_init__(self) -> None:
        if self.unknown not in ("error", "zero"):
            raise ConfigError(f"PriceTable.unknown must be 'error' or 'zero'; got {self.unknown!r}")
        for model, price in self.prices.items():
            if not isinstance(price, ModelPrice):
                raise ConfigError(f"the price of {model!r} must be a ModelPrice; got {price!r}")

    def price(self, model: str) -> ModelPrice | None:
        """The price of `model`, or None when the table has none for it (local models are free)."""
        if model in self.prices:
            return self.prices[model]
        globs = [p for p in self.prices if any(c in p for c in "*?[") and fnmatch.fnmatchcase(model, p)]
        if globs:
            return self.prices[max(globs, key=len)]
        if model.startswith("local:"):
            return FREE
        return None

    def quote(self, model: str, usage: Usage) -> Cost:
        """What `usage` on `model` cost, saying whether the model was priced.

        Raises:
            ConfigError: the model has no price and `unknown` is `"error"`.
        """
        price = self.price(model)
        if price is None:
            if self.unknown == "zero":
                return Cost(usd=0.0, priced=False, model=model)
            raise ConfigError(
                f"no price for model {model!r}; priced: {sorted(self.prices) or 'none'}. Add it to the "
                "price table (a glob such as 'openai:NAME@*' matches every endpoint), or build the table "
                "with unknown='zero' to count unpriced models as free"
            )
        return Cost(usd=price.cost(usage), priced=True, model=model)

    def cost(self, model: str, usage: Usage) -> float:
        """USD that `usage` on `model` cost.

        Raises:
            ConfigError: the model has no price and `unknown` is `"error"`.
        """
        return self.quote(model, usage).usd

    @classmethod
    def from_toml(cls, path: str | Path) -> PriceTable:
        """Load a table from a TOML file.

        ```toml
        unknown = "error"            # or "zero"

        [models."openai:gpt-4o-mini@*"]
        input = 0.15                 # USD per million tokens
        output = 0.60
        cached = 0.075               # optional; defaults to input
        ```

        Raises:
            ConfigError: the file is missing, not TOML, or holds something other than prices.
        """
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"no price file {str(path)!r}; check the path") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"price file {str(path)!r} is not valid TOML: {exc}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "prices") -> PriceTable:
        """Build a table from the parsed form `from_toml` documents."""
        extra = sorted(set(data) - {"unknown", "models"})
        if extra:
            raise ConfigError(f"{source}: unknown keys {extra}; a price table has 'unknown' and [models.*]")
        models = data.get("models", {})
        if not isinstance(models, Mapping):
            raise ConfigError(f"{source}: 'models' must be a table of [models.\"MODEL\"] entries")
        prices: dict[str, ModelPrice] = {}
        for model, entry in models.items():
            if not isinstance(entry, Mapping):
                raise ConfigError(f"{source}: [models.{model!r}] must be a table with input and output")
            bad = sorted(set(entry) - {"input", "output", "cached"})
            missing = sorted({"input", "output"} - set(entry))
            if bad or missing:
                raise ConfigError(
                    f"{source}: [models.{model!r}] needs input and output (and optionally cached), "
                    f"USD per million tokens; unknown {bad}, missing {missing}"
                )
            prices[model] = ModelPrice(
                input=entry["input"], output=entry["output"], cached=entry.get("cached")
            )
        return cls(prices=prices, unknown=data.get("unknown", "error"))
