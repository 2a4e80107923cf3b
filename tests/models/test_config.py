"""The models file: names for model strings with their options, found through TETHER_MODELS."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tether import Agent
from tether.exceptions import ConfigError
from tether.models import (
    MODELS_ENV,
    ModelPriceConfig,
    UserMessage,
    check_model_spec,
    load_models,
    model_from_spec,
)
from tether.models.anthropic import AnthropicModel
from tether.models.openai_compat import OpenAICompatModel
from tether.testing import AnthropicServer

MODELS = """
[models.support-fast]
model = "anthropic:claude-haiku-4-5@http://127.0.0.1:9"
tier = "fast"
timeout_s = 30
api_key_env = "SUPPORT_ANTHROPIC_KEY"
price = { input = 1.0, output = 5.0, cached = 0.1 }

[models.on-host]
model = "local:qwen2.5-coder-1.5b"
tier = "standard"
context_window = 8192

[models.gateway]
model = "openai:gpt-4o-mini@http://127.0.0.1:9/v1"
private = true
"""


@pytest.fixture
def models_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(MODELS)
    monkeypatch.setenv(MODELS_ENV, str(path))
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


def test_entries_carry_their_options(models_file: Path) -> None:
    models = load_models(models_file)
    assert [m.name for m in models] == ["support-fast", "on-host", "gateway"]
    fast = models.entry("support-fast")
    assert (fast.provider, fast.tier, fast.timeout_s, fast.api_key_env) == (
        "anthropic",
        "fast",
        30.0,
        "SUPPORT_ANTHROPIC_KEY",
    )
    assert fast.price == ModelPriceConfig(input=1.0, output=5.0, cached=0.1)
    # a local model is private unless the file says otherwise; a remote one only when the file says so
    assert not fast.private and models.entry("on-host").private and models.entry("gateway").private
    assert models.entry("on-host").context_window == 8192
    assert [m.name for m in models.tier("fast")] == ["support-fast"]


def test_an_agent_resolves_a_configured_name(models_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORT_ANTHROPIC_KEY", "sk-ant-support")
    agent = Agent("support", model="support-fast")
    model = agent.model
    assert isinstance(model, AnthropicModel)
    assert model.name == "anthropic:claude-haiku-4-5@http://127.0.0.1:9"
    assert check_model_spec("support-fast") == ("anthropic", "claude-haiku-4-5@http://127.0.0.1:9")
    gateway = model_from_spec("gateway")
    assert isinstance(gateway, OpenAICompatModel) and gateway.base_url == "http://127.0.0.1:9/v1"


@pytest.mark.anyio
async def test_a_configured_model_gets_its_key_and_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with AnthropicServer(api_key="sk-ant-from-env") as server:
        server.reply_text("Hello from the configured model.")
        path = tmp_path / "models.toml"
        spec = f"anthropic:claude-test@{server.base_url}"
        path.write_text(f'[models.helper]\nmodel = "{spec}"\napi_key_env = "HELPER_KEY"\n')
        monkeypatch.setenv(MODELS_ENV, str(path))
        monkeypatch.setenv("HELPER_KEY", "sk-ant-from-env")
        monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
        model = model_from_spec("helper")
        try:
            response = await model.request([UserMessage(content="Hi")])
        finally:
            await model.aclose()
    assert response.text == "Hello from the configured model."
    assert server.requests[0].headers["x-api-key"] == "sk-ant-from-env"


def test_a_missing_key_variable_is_named(models_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUPPORT_ANTHROPIC_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"\$SUPPORT_ANTHROPIC_KEY, which is not set"):
        model_from_spec("support-fast")


def test_an_unknown_name_lists_the_configured_ones(models_file: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        Agent("support", model="support-slow")
    message = str(caught.value)
    assert "'support-slow'" in message and "gateway, on-host, support-fast" in message
    assert str(models_file) in message


def test_a_name_without_a_models_file_says_to_set_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODELS_ENV, raising=False)
    with pytest.raises(ConfigError, match=f"{MODELS_ENV} is not set"):
        Agent("support", model="support-fast")


def test_a_models_file_that_is_gone_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MODELS_ENV, str(tmp_path / "nowhere.toml"))
    with pytest.raises(ConfigError, match="no such file exists"):
        check_model_spec("support-fast")


def test_the_file_is_read_again_when_it_changes(models_file: Path) -> None:
    assert check_model_spec("gateway")[0] == "openai"
    models_file.write_text(
        MODELS.replace(
            '[models.gateway]\nmodel = "openai:gpt-4o-mini@http://127.0.0.1:9/v1"',
            '[models.gateway]\nmodel = "anthropic:claude-x"',
        )
    )
    stat = models_file.stat()
    os.utime(models_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert check_model_spec("gateway")[0] == "anthropic"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[models.a]\nmodel = 'local:qwen2.5-coder-0.5b'\ntimeout = 3\n", "unknown keys ['timeout']"),
        ("[routes.a]\nx = 1\n", "unknown top-level keys ['routes']"),
        ("[models.a]\ntier = 'fast'\n", "model must be a model string"),
        ("[models.a]\nmodel = 'other-name'\n", "model must be a model string"),
        ("[models.a]\nmodel = 'gemini:pro'\n", "unknown model provider 'gemini'"),
        (
            "[models.a]\nmodel = 'local:qwen2.5-coder-0.5b'\ntier = 'turbo'\n",
            "tier must be one of fast, standard, reasoning",
        ),
        ("[models.a]\nmodel = 'anthropic:c'\ntimeout_s = -1\n", "timeout_s must be a positive number"),
        ("[models.a]\nmodel = 'anthropic:c'\nprivate = 'yes'\n", "private must be true or false"),
        ("[models.a]\nmodel = 'anthropic:c'\nprice = { input = 1.0 }\n", "price needs output"),
        (
            "[models.a]\nmodel = 'anthropic:c'\nprice = { input = 1.0, output = -2 }\n",
            "price.output must be USD",
        ),
        (
            "[models.a]\nmodel = 'anthropic:c'\nprice = { input = 1, output = 2, per = 'k' }\n",
            "unknown price keys",
        ),
        (
            "[models.a]\nmodel = 'anthropic:c'\napi_key_env = 'my key'\n",
            "api_key_env must name an environment variable",
        ),
        ("[models.a]\nmodel = 'local:qwen2.5-coder-0.5b'\napi_key_env = 'KEY'\n", "apply to remote models"),
        (
            "[models.a]\nmodel = 'local:qwen2.5-coder-0.5b'\ncontext_window = 1.5\n",
            "context_window must be a positive whole",
        ),
        ('[models."a:b"]\nmodel = "anthropic:c"\n', "no ':'"),
        ("[models.a\nmodel = 'x'\n", "not valid TOML"),
    ],
)
def test_bad_entries_are_config_errors_naming_file_entry_and_key(
    tmp_path: Path, text: str, says: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_models(path)
    assert says in str(caught.value)
    assert str(path) in str(caught.value)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_models(tmp_path / "absent.toml")


def test_model_strings_still_work_with_a_models_file_set(models_file: Path) -> None:
    assert check_model_spec("openai:m@http://127.0.0.1:1/v1") == ("openai", "m@http://127.0.0.1:1/v1")
