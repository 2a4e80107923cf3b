"""Abuse: threats, incitement to self-harm and severe insults, from a small per-language lexicon.

Phrases rather than single words, so "kill the process" or "this bug is killing me" stay clean. The
lexicon is deliberately small and conservative; teams extend it per deployment with `extra`.
"""
# ruff: noqa: E501  (pattern tables: one regex per line reads and diffs better than split strings)

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tether.exceptions import ConfigError

from ._base import DEFAULT_MAX_CHARS, TextGuard, check_action
from ._fastre import PrefixRegex
from ._text import excerpt, fold
from ._verdict import Action, GuardContext, Span, Stage, Verdict

__all__ = ["ABUSE_LANGUAGES", "AbuseGuard"]

# language -> [(kind, severity 0..1, pattern over the folded, lowercased text)]
_LEXICON: dict[str, list[tuple[str, float, str]]] = {
    "en": [
        ("threat", 0.95, r"\b(?:i(?:'ll|\s+will|\s+am\s+going\s+to|'m\s+going\s+to|'m\s+gonna|\s+gonna)|we(?:'ll|\s+will))\s+(?:\w+\s+){0,3}(?:kill|murder|hurt|rape|stab|shoot|beat\s+up|find\s+and\s+kill)\s+you\b"),
        ("threat", 0.9, r"\byou(?:'re|\s+are)\s+(?:going\s+to|gonna)\s+die\b|\b(?:i\s+know\s+where\s+you\s+live)\b"),
        ("self_harm_incitement", 0.95, r"\b(?:kill|hang|shoot)\s+yourself\b|\bkys\b|\bgo\s+(?:and\s+)?die\b|\bdie\s+in\s+a\s+(?:fire|hole|ditch)\b|\bnobody\s+would\s+miss\s+you\b"),
        ("insult", 0.7, r"\bfuck\s+(?:you|off)\b|\bpiece\s+of\s+shit\b|\bson\s+of\s+a\s+bitch\b|\byou\s+(?:\w+\s+){0,2}(?:idiot|moron|imbecile|bitch|bastard|asshole|cunt|retard|loser|scum)\b|\bshut\s+the\s+fuck\s+up\b|\bstupid\s+(?:bitch|cunt|whore)\b"),
    ],
    "de": [
        ("threat", 0.95, r"\bich\s+(?:bring|bringe|werde)\s+dich\s+(?:um|umbringen|töten|fertigmachen)\b|\bich\s+(?:töte|ermorde)\s+dich\b"),
        ("self_harm_incitement", 0.95, r"\bbring\s+dich\s+(?:doch\s+)?um\b|\bgeh\s+sterben\b"),
        ("insult", 0.7, r"\bfick\s+dich\b|\bverpiss\s+dich\b|\bhurensohn\b|\bdu\s+(?:\w+\s+)?(?:arschloch|wichser|missgeburt|idiot|vollidiot)\b"),
    ],
    "fr": [
        ("threat", 0.95, r"\bje\s+vais\s+te\s+(?:tuer|buter|crever|massacrer)\b|\bje\s+te\s+(?:tue|bute)rai\b"),
        ("self_harm_incitement", 0.95, r"\b(?:va\s+te\s+pendre|suicide[\s-]toi|tue[\s-]toi|va\s+crever)\b"),
        ("insult", 0.7, r"\bva\s+te\s+faire\s+foutre\b|\bferme\s+ta\s+gueule\b|\bfils\s+de\s+pute\b|\b(?:sale\s+)?(?:connard|connasse|salope|enculé)\b"),
    ],
    "es": [
        ("threat", 0.95, r"\bte\s+voy\s+a\s+(?:matar|partir\s+la\s+cara|hacer\s+daño)\b|\bte\s+mataré\b"),
        ("self_harm_incitement", 0.95, r"\b(?:mátate|suicídate|ojalá\s+te\s+mueras)\b"),
        ("insult", 0.7, r"\bhijo\s+de\s+(?:puta|perra)\b|\bvete\s+a\s+la\s+mierda\b|\b(?:pendejo|cabrón|gilipollas|malparido)\b"),
    ],
    "it": [
        ("threat", 0.95, r"\bti\s+(?:ammazzo|uccido|faccio\s+fuori)\b"),
        ("self_harm_incitement", 0.95, r"\b(?:ammazzati|ucciditi|vai\s+a\s+morire)\b"),
        ("insult", 0.7, r"\bvaffanculo\b|\bfiglio\s+di\s+puttana\b|\b(?:stronzo|coglione|bastardo)\b"),
    ],
    "pt": [
        ("threat", 0.95, r"\bvou\s+te\s+matar\b|\beu\s+te\s+mato\b"),
        ("self_harm_incitement", 0.95, r"\b(?:se\s+mata|vai\s+morrer|mate-se)\b"),
        ("insult", 0.7, r"\bvai\s+(?:se\s+)?foder\b|\bfilho\s+da\s+puta\b|\b(?:arrombado|desgraçado|otário)\b"),
    ],
}  # fmt: skip
# a language's patterns run only if one of its words occurs (a substring test is ~50x cheaper than a search)
_ANCHORS: dict[str, tuple[str, ...]] = {
    "en": ("kill", "murder", "hurt", "rape", "stab", "shoot", "beat", "die", "kys", "hang", "miss you", "fuck", "shit",
           "bitch", "idiot", "moron", "imbecile", "bastard", "asshole", "cunt", "retard", "loser", "scum", "live"),
    "de": ("dich", "sterben", "hurensohn"),
    "fr": ("te ", "toi", "gueule", "pute", "connard", "connasse", "salope", "enculé", "crever"),
    "es": ("te ", "mátate", "suicídate", "mueras", "puta", "perra", "mierda", "pendejo", "cabrón", "gilipollas", "malparido"),
    "it": ("ti ", "ammazzati", "ucciditi", "morire", "vaffanculo", "puttana", "stronzo", "coglione", "bastardo"),
    "pt": ("te ", "mato", "mata", "morrer", "mate-se", "foder", "puta", "arrombado", "desgraçado", "otário"),
}  # fmt: skip
ABUSE_LANGUAGES: tuple[str, ...] = tuple(_LEXICON)


class AbuseGuard(TextGuard):
    """Threats, self-harm incitement and severe insults, per language.

    Args:
        languages: which lexicons to use; all of `ABUSE_LANGUAGES` by default.
        extra: more patterns per language, as `{lang: [(kind, severity, regex), ...]}`.
        block_threshold: severity at or above which the guard asks for `action`.
        action: what to ask for above the threshold (`block` by default); below it, `flag`.
        stages: where it runs.
        name: the guard's name in verdicts.
        max_chars: scan at most this many characters.
    """

    def __init__(
        self,
        *,
        languages: Iterable[str] | None = None,
        extra: Mapping[str, Iterable[tuple[str, float, str]]] | None = None,
        block_threshold: float = 0.9,
        action: Action = "block",
        stages: Iterable[Stage] = ("input", "output"),
        name: str = "abuse",
        max_chars: int = DEFAULT_MAX_CHARS,
    ):
        super().__init__(name=name, stages=stages, max_chars=max_chars)
        chosen = tuple(languages) if languages is not None else ABUSE_LANGUAGES
        unknown = sorted(set(chosen) - set(_LEXICON) - set(extra or {}))
        if unknown:
            raise ConfigError(f"guard {name!r}: no abuse lexicon for {unknown}; have {list(ABUSE_LANGUAGES)}")
        self.action = check_action(action, name)
        self.block_threshold = block_threshold
        self._patterns: list[tuple[str, str, float, PrefixRegex, tuple[str, ...]]] = []
        for lang in chosen:
            # extra patterns have no anchors: they always run
            for kind, severity, pattern in _LEXICON.get(lang, ()):
                self._patterns.append((lang, kind, severity, PrefixRegex(pattern), _ANCHORS[lang]))
            for kind, severity, pattern in (extra or {}).get(lang, ()):
                self._patterns.append((lang, kind, severity, PrefixRegex(pattern), ()))

    def _check_text(self, text: str, context: GuardContext) -> list[Verdict]:
        view = fold(text)
        spans: list[Span] = []
        top = 0.0
        low = view.text
        for lang, kind, severity, pattern, anchors in self._patterns:
            if anchors and not any(a in low for a in anchors):
                continue
            m = pattern.search(low)
            if m is None:
                continue
            start, end = view.to_original(m.start(), m.end())
            spans.append(
                Span(start=start, end=end, excerpt=excerpt(text, start, end), label=f"{kind}:{lang}")
            )
            top = max(top, severity)
        if not spans:
            return []
        kinds = sorted({s.label for s in spans})
        return [
            Verdict(
                guard=self.name,
                category="abuse",
                action=self.action if top >= self.block_threshold else "flag",
                score=top,
                spans=tuple(spans),
                message=f"abusive language ({', '.join(kinds)})",
            )
        ]
