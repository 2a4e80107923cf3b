"""Prices: cost per model from a table or a TOML file; local models are free; unknown models are loud."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether import ConfigError
from tether.governance import ModelPrice, PriceTable
from tether.models import Usage

USAGE = Usage(input_tokens=1_000_000, output_tokens=500_000, cached_tokens=200_000)


def test_cost_charges_cached_tokens_at_their_rate() -> None:
    table = PriceTable(prices={"openai:gpt-x@*": ModelPrice(input=2.0, output=8.0, cached=0.5)})
    # per million: 800k uncached at $2, 200k cached at $0.5, 500k output at $8
    assert table.cost("openai:gpt-x@https://api.example/v1", USAGE) == pytest.approx(1.6 + 0.1 + 4.0)
    no_cache_rate = PriceTable(prices={"m:x": ModelPrice(input=2.0, output=8.0)})
    assert no_cache_rate.cost("m:x", USAGE) == pytest.approx(2.0 + 4.0)


def test_exact_key_beats_the_longest_glob() -> None:
    table = PriceTable(
        prices={
            "openai:*": ModelPrice(input=1, output=1),
            "openai:gpt-x@*": ModelPrice(input=2, output=2),
            "openai:gpt-x@http://cheap/v1": ModelPrice(input=0.5, output=0.5),
        }
    )
    one_m = Usage(input_tokens=1_000_000)
    assert table.cost("openai:gpt-x@http://cheap/v1", one_m) == 0.5
    assert table.cost("openai:gpt-x@http://other/v1", one_m) == 2
    assert table.cost("openai:gpt-y@http://other/v1", one_m) == 1


def test_local_models_cost_no_money() -> None:
    assert PriceTable().cost("local:qwen2.5-coder-1.5b", USAGE) == 0.0
    assert PriceTable().quote("local:qwen2.5-coder-1.5b", USAGE).priced


def test_unknown_model_is_an_error_or_an_explicit_flagged_zero() -> None:
    with pytest.raises(ConfigError, match=r"no price for model 'openai:mystery'.*unknown='zero'"):
        PriceTable(prices={"m:a": ModelPrice(input=1, output=1)}).cost("openai:mystery", USAGE)
    quote = PriceTable(unknown="zero").quote("openai:mystery", USAGE)
    assert (quote.usd, quote.priced) == (0.0, False)


def test_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        'unknown = "zero"\n[models."openai:gpt-x@*"]\ninput = 2.0\noutput = 8.0\ncached = 0.5\n'
        '[models."anthropic:claude"]\ninput = 3\noutput = 15\n'
    )
    table = PriceTable.from_toml(path)
    assert table.unknown == "zero"
    assert table.prices["openai:gpt-x@*"] == ModelPrice(input=2.0, output=8.0, cached=0.5)
    assert table.cost("anthropic:claude", Usage(output_tokens=1_000_000)) == 15


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[models."a:b"]\ninput = 1\n', "missing \\['output'\\]"),
        ('[models."a:b"]\ninput = 1\noutput = 1\nouptut = 2\n', "unknown \\['ouptut'\\]"),
        ('[models."a:b"]\ninput = -1\noutput = 1\n', "0 or more"),
        ('unknown = "free"\n', "'error' or 'zero'"),
        ("currency = 'EUR'\n", "unknown keys \\['currency'\\]"),
        ("[models\n", "not valid TOML"),
    ],
)
def test_bad_price_files_say_what_is_wrong(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        PriceTable.from_toml(path)


def test_missing_price_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no price file"):
        PriceTable.from_toml(tmp_path / "nope.toml")
