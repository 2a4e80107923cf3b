"""Credentials: provider key formats, private keys, JWTs, `password=...` assignments, high-entropy tokens.

Known formats are redacted (their prefixes make them near-certain); a high-entropy token with no known
format is only flagged by default, because build hashes and ids look the same to a statistic.
"""
# ruff: noqa: E501  (pattern tables: one regex per line reads and diffs better than split strings)

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable

from tether.exceptions import ConfigError

from ._base import DEFAULT_MAX_CHARS, TextGuard, check_action, mask, redact
from ._fastre import PrefixRegex
from ._verdict import Action, GuardContext, Span, Stage, Verdict

__all__ = ["SecretsGuard", "find_secrets", "shannon_entropy"]

# (label, pattern); every quantifier is bounded or over a class that the next token cannot start with
_FORMATS: list[tuple[str, PrefixRegex]] = [
    (
        "private_key",
        PrefixRegex(
            r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----(?:[\s\S]{0,12000}?-----END (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----)?"
        ),
    ),
    ("anthropic_api_key", PrefixRegex(r"\bsk-ant-(?:api|admin|oat)\d{2}-[A-Za-z0-9_-]{20,200}")),
    (
        "openai_api_key",
        PrefixRegex(
            r"\bsk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20,200}T3BlbkFJ[A-Za-z0-9_-]{10,200}|\bsk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,200}|\bsk-[A-Za-z0-9]{48}\b"
        ),
    ),
    (
        "aws_access_key_id",
        PrefixRegex(r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA|ASCA)[A-Z0-9]{16}\b"),
    ),
    (
        "aws_secret_access_key",
        PrefixRegex(
            r"(?i:aws_?secret_?(?:access_?)?key|secret_?access_?key)[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"
        ),
    ),
    ("github_token", PrefixRegex(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{60,255})\b")),
    ("gitlab_token", PrefixRegex(r"\bglpat-[A-Za-z0-9_-]{20,64}\b")),
    ("slack_token", PrefixRegex(r"\bxox[abposr]-(?:\d{1,20}-){0,3}[A-Za-z0-9-]{10,200}")),
    (
        "slack_webhook",
        PrefixRegex(r"https://hooks\.slack\.com/services/T[A-Z0-9]{6,20}/B[A-Z0-9]{6,20}/[A-Za-z0-9]{20,40}"),
    ),
    ("google_api_key", PrefixRegex(r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])")),
    ("google_oauth_secret", PrefixRegex(r"\bGOCSPX-[A-Za-z0-9_-]{28}(?![A-Za-z0-9_-])")),
    ("stripe_secret_key", PrefixRegex(r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,247}\b")),
    ("stripe_webhook_secret", PrefixRegex(r"\bwhsec_[A-Za-z0-9]{32,}\b")),
    ("twilio_api_key", PrefixRegex(r"\bSK[0-9a-f]{32}\b")),
    ("sendgrid_api_key", PrefixRegex(r"\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}\b")),
    ("npm_token", PrefixRegex(r"\bnpm_[A-Za-z0-9]{36}\b")),
    ("pypi_token", PrefixRegex(r"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,400}")),
    ("huggingface_token", PrefixRegex(r"\bhf_[A-Za-z]{34,40}\b")),
    ("digitalocean_token", PrefixRegex(r"\bdo[por]_v1_[a-f0-9]{64}\b")),
    ("shopify_token", PrefixRegex(r"\bshp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}\b")),
    ("mailgun_api_key", PrefixRegex(r"\bkey-[0-9a-f]{32}\b")),
    ("telegram_bot_token", PrefixRegex(r"\b\d{8,10}:AA[A-Za-z0-9_-]{33}\b")),
    ("azure_storage_key", PrefixRegex(r"AccountKey=[A-Za-z0-9+/]{86}==")),
    ("jwt", PrefixRegex(r"\beyJ[A-Za-z0-9_-]{8,2000}\.eyJ[A-Za-z0-9_-]{8,4000}\.[A-Za-z0-9_-]{16,1000}")),
    (
        "url_credentials",
        PrefixRegex(r"\b[a-z][a-z0-9+.-]{1,20}://[^\s:/@]{1,100}:([^\s:/@]{3,200})@[\w.-]{1,253}"),
    ),
]
# `password = "hunter2"`, `API_KEY: abc...`: the value must be long and varied enough to be a real secret
_ASSIGNMENT = re.compile(
    r"(?i:\b(?:api[_-]?key|apikey|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|client[_-]?secret|"
    r"passw(?:or)?d|pwd|passphrase|private[_-]?key|token))[\"']?\s{0,3}[:=]\s{0,3}[\"']?([^\s\"',;]{8,200})"
)
_CANDIDATE = re.compile(r"(?<![A-Za-z0-9+/_=-])[A-Za-z0-9+/_=-]{32,512}(?![A-Za-z0-9+/_=-])")
_HEX_ONLY = re.compile(r"[0-9a-fA-F]+")


def shannon_entropy(value: str) -> float:
    """Bits per character of `value`'s character distribution."""
    if not value:
        return 0.0
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


def _high_entropy(token: str) -> bool:
    # hex digests (git SHAs, sha256 sums) are ids, not credentials; real keys mix cases and digits
    if _HEX_ONLY.fullmatch(token):
        return False
    classes = sum(
        (any(c.islower() for c in token), any(c.isupper() for c in token), any(c.isdigit() for c in token))
    )
    return classes == 3 and shannon_entropy(token) >= 4.2


def find_secrets(text: str, *, entropy: bool = True) -> list[tuple[int, int, str, float]]:
    """Find credentials in `text`.

    Args:
        text: the text.
        entropy: also report unknown high-entropy tokens (score 0.6).

    Returns:
        `(start, end, label, score)` findings without overlaps, in text order.
    """
    found: list[tuple[int, int, str, float]] = []
    for label, pattern in _FORMATS:
        for m in pattern.finditer(text):
            group = 1 if pattern.groups else 0
            found.append((m.start(group), m.end(group), label, 0.99))
    for m in _ASSIGNMENT.finditer(text):
        value = m.group(1)
        if len(set(value)) >= 6 and not value.lower().startswith(
            ("<", "{", "$", "%", "xxx", "***", "your", "none", "null")
        ):
            found.append((m.start(1), m.end(1), "credential_assignment", 0.9))
    if entropy:
        for m in _CANDIDATE.finditer(text):
            if _high_entropy(m.group()):
                found.append((m.start(), m.end(), "high_entropy_token", 0.6))
    if not found:
        return []
    found.sort(key=lambda f: (-f[3], f[0], -(f[1] - f[0])))
    kept: list[tuple[int, int, str, float]] = []
    for f in found:
        if not any(f[0] < k[1] and k[0] < f[1] for k in kept):
            kept.append(f)
    kept.sort()
    return kept


class SecretsGuard(TextGuard):
    """Finds credentials; redacts known formats and flags unknown high-entropy tokens.

    On output it stops a model from echoing a key it saw; on tool calls, from sending one out.

    Args:
        action: what to do with known formats (`redact` by default; `block` on output is stricter).
        entropy_action: what to do when only a high-entropy token was found (`flag` by default).
        entropy: look for high-entropy tokens at all.
        stages: where it runs (every stage by default).
        name: the guard's name in verdicts.
        max_chars: scan at most this many characters.
    """

    def __init__(
        self,
        *,
        action: Action = "redact",
        entropy_action: Action = "flag",
        entropy: bool = True,
        stages: Iterable[Stage] = ("input", "output", "tool_call"),
        name: str = "secrets",
        max_chars: int = DEFAULT_MAX_CHARS,
    ):
        super().__init__(name=name, stages=stages, max_chars=max_chars)
        self.action = check_action(action, name)
        self.entropy_action = check_action(entropy_action, name)
        if self.entropy_action == "redact" and self.action != "redact":
            raise ConfigError(f"guard {name!r}: entropy_action 'redact' needs action 'redact' too")
        self.entropy = entropy

    def _check_text(self, text: str, context: GuardContext) -> list[Verdict]:
        found = find_secrets(text, entropy=self.entropy)
        if not found:
            return []
        known = [f for f in found if f[2] != "high_entropy_token"]
        action = self.action if known else self.entropy_action
        # only what the chosen action covers is redacted: a flagged high-entropy token stays in the text
        to_redact = found if action == "redact" and self.entropy_action == "redact" else known
        spans = tuple(Span(start=s, end=e, excerpt=mask(text[s:e]), label=label) for s, e, label, _ in found)
        kinds = sorted({label for _, _, label, _ in found})
        return [
            Verdict(
                guard=self.name,
                category="secret",
                action=action,
                score=max(score for *_, score in found),
                spans=spans,
                message=f"credentials: {', '.join(kinds)}",
                redacted_text=redact(text, [(s, e, label) for s, e, label, _ in to_redact], "[{label}]")
                if action == "redact"
                else None,
            )
        ]
