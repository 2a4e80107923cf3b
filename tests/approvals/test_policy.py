"""The approval policy: tiers, the confidence floor for irreversible tools, overrides, files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.approvals import ProposedCall, TierPolicy, load_policy
from tether.exceptions import ConfigError


def proposed(risk: str, *, reversible: bool = True, confidence: float | None = None, **kw) -> ProposedCall:
    return ProposedCall(
        agent=kw.get("agent", "support"),
        tool=kw.get("tool", "refund"),
        arguments={"amount": 10},
        risk=risk,
        reversible=reversible,
        confidence=confidence,
        user_groups=tuple(kw.get("groups", ())),
    )


@pytest.mark.parametrize(
    ("risk", "action"), [("low", "run"), ("medium", "flag"), ("high", "ask_async"), ("critical", "ask_sync")]
)
def test_default_tiers(risk: str, action: str) -> None:
    decision = TierPolicy().decide(proposed(risk))
    assert decision.action == action and risk in decision.reason


def test_low_confidence_irreversible_call_always_escalates() -> None:
    policy = TierPolicy(confidence_floor=0.6)
    d = policy.decide(proposed("low", reversible=False, confidence=0.3))
    assert d.action == "ask_async" and "confidence 0.30 is below 0.60" in d.reason
    assert policy.decide(proposed("low", reversible=True, confidence=0.3)).action == "run"
    assert policy.decide(proposed("low", reversible=False, confidence=0.9)).action == "run"
    assert (
        policy.decide(proposed("low", reversible=False, confidence=None)).action == "run"
    )  # unknown is not low
    assert policy.decide(proposed("critical", reversible=False, confidence=0.1)).action == "ask_sync"


def test_a_confidence_function_fills_in_when_the_model_gives_none() -> None:
    policy = TierPolicy(confidence=lambda call: 0.2 if call.arguments["amount"] > 5 else 0.9)
    assert policy.decide(proposed("low", reversible=False)).action == "ask_async"


def test_overrides_apply_in_order() -> None:
    policy = load_policy(Path(__file__).with_name("policy.toml"))
    d = policy.decide(proposed("medium", tool="refund"))
    assert (d.action, d.deadline_s, d.approvers) == ("ask_sync", 900.0, "approvers")
    d = policy.decide(proposed("medium", tool="refund", groups=["finance"]))
    assert d.approvers == "finance-leads" and "tool refund sets ask_sync" in d.reason
    assert policy.decide(proposed("medium", tool="lookup")).action == "run"  # tier override
    assert policy.decide(proposed("low", agent="intern", tool="lookup")).action == "ask_async"
    assert (policy.on_expiry, policy.escalate_to, policy.deadline_s) == ("escalate", "leads", 4 * 3600)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[tiers]\nlow = 'maybe'\n", "unknown action 'maybe' for tier 'low'"),
        ("[tiers]\nextreme = 'run'\n", "unknown risk tier 'extreme'"),
        ("deadline = 'soon'\n", "is not a duration"),
        ("colour = 'red'\n", "unknown keys ['colour']"),
        ("on_expiry = 'escalate'\n", "needs escalate_to"),
        ("[tools.refund]\nactoin = 'run'\n", "unknown keys ['actoin']"),
        ("tiers = [", "not valid TOML"),
    ],
)
def test_bad_policy_files(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "p.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_policy(p)


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no policy file"):
        load_policy(tmp_path / "nope.toml")
