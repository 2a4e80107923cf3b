"""Secrets: provider formats and private keys are redacted; unknown high-entropy tokens are only flagged."""

from __future__ import annotations

import pytest

from tether.exceptions import ConfigError
from tether.guardrails import GuardContext, SecretsGuard, find_secrets

CTX = GuardContext(stage="output")

# assembled at run time so that secret scanners do not flag this test file itself
KEYS = {
    "openai_api_key": "sk-proj-" + "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6kM9nP2rS5uV8xY1aD4fG7iL0oR3tU6",
    "anthropic_api_key": "sk-ant-api03-" + "x7Yz" * 22,
    "aws_access_key_id": "AKIA" + "IOSFODNN7EXAMPLE",
    "github_token": "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "slack_token": "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "google_api_key": "AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
    "stripe_secret_key": "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
    "jwt": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    + "eyJzdWIiOiIxMjM0NTY3ODkwIn0."
    + "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
}


@pytest.mark.parametrize("label", sorted(KEYS))
def test_known_formats_are_redacted(label: str) -> None:
    key = KEYS[label]
    text = f"config: use {key} for prod"
    verdict = SecretsGuard().check(text, CTX)[0]
    assert verdict.action == "redact"
    assert label in {s.label for s in verdict.spans}
    assert verdict.redacted_text is not None and key not in verdict.redacted_text
    assert all(key not in s.excerpt for s in verdict.spans)


def test_private_key_block_is_redacted_whole() -> None:
    pem = (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAu1SU1L7VLPHCgcZ\nabc\n-----END RSA PRIVATE KEY-----"
    )
    verdict = SecretsGuard().check(f"here:\n{pem}\nbye", CTX)[0]
    assert verdict.redacted_text == "here:\n[PRIVATE_KEY]\nbye"


def test_assignments_need_a_real_value() -> None:
    assert [f[2] for f in find_secrets("password = 'Tr0ub4dor&3xQ'")] == ["credential_assignment"]
    assert find_secrets("password = 'your-password-here'") == []
    assert find_secrets("set api_key: <API_KEY>") == []


def test_high_entropy_tokens_are_flagged_not_redacted() -> None:
    token = "Zx81Kq0PvR7tLm2NwB5yHc9JdF3sGa6E"
    verdict = SecretsGuard().check(f"session {token}", CTX)[0]
    assert verdict.action == "flag" and verdict.redacted_text is None


def test_hashes_and_ids_are_not_secrets() -> None:
    assert find_secrets("commit 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08") == []
    assert find_secrets("uuid 123e4567-e89b-12d3-a456-426614174000 and sk-learn is a library") == []


def test_entropy_can_be_turned_off_and_config_checked() -> None:
    assert SecretsGuard(entropy=False).check("session Zx81Kq0PvR7tLm2NwB5yHc9JdF3sGa6E", CTX) == []
    with pytest.raises(ConfigError):
        SecretsGuard(action="block", entropy_action="redact")
