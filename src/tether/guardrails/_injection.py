"""Prompt-injection rules: the fast, explainable first layer.

Rules catch the phrasings attackers reuse (instruction override, persona hijack, system-prompt extraction,
chat-template tokens, delimiter tricks, text addressed to the AI inside a document) in English and a few
other languages, after undoing obfuscation (see `_text`). Each rule has a weight; a text's score is
`1 - prod(1 - weight)` over the distinct rules that fired, so one strong rule or several weak ones block.

Rules alone catch little of what real attackers write; the classifier (`InjectionClassifierGuard`) covers
the paraphrases. The rules are tuned for hard-benign text: "ignore my previous email", "what are the
system requirements", "act as a friendly tutor" must not fire.

Every pattern is linear-time: alternations of literals, `\\s+`, and bounded filler `(?:[\\w'-]+\\s+){0,n}`
whose word and space classes are disjoint, so no input can make the engine backtrack exponentially.
"""
# ruff: noqa: E501  (pattern tables: one regex per line reads and diffs better than split strings)

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from tether.exceptions import ConfigError

from ._base import DEFAULT_MAX_CHARS, TextGuard, check_action
from ._fastre import PrefixRegex
from ._text import View, excerpt, hidden_characters, variants
from ._verdict import Action, GuardContext, Source, Span, Stage, Verdict

__all__ = ["InjectionGuard", "InjectionRule", "default_injection_rules"]


@dataclass(frozen=True, slots=True)
class InjectionRule:
    """One pattern with its weight.

    Attributes:
        name: what it detects (`instruction_override`, `role_token`, ...); several rules may share a name.
        weight: how sure a match alone makes us, 0..1.
        pattern: a compiled regex over the folded, lowercased text.
        embedded_only: fires only on text that arrived in a document or tool result, where a line
            addressed to the AI is an attack; from the user it is an ordinary request.
        folded: read the homoglyph-folded views (English); `False` reads the text only lowercased, for
            rules in scripts that folding would mangle (Cyrillic, Greek).
        anchors: groups of lowercase substrings; every match contains one substring of each group, so the
            regex is skipped unless each group has a substring in the text. Empty: always run the regex.
    """

    name: str
    weight: float
    pattern: re.Pattern[str]
    embedded_only: bool = False
    anchors: tuple[tuple[str, ...], ...] = ()
    folded: bool = True


def _re(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


# filler: up to n words between the parts of a phrase ("ignore all of the previous instructions")
def _gap(n: int) -> str:
    return rf"(?:[\w'’-]+\s+){{0,{n}}}"  # noqa: RUF001  (typographic apostrophe)


_IGNORE = (
    r"(?:ignore|disregard|forget|bypass|override|overlook|neglect|abandon|discard|set\s+aside|throw\s+out)"
)
_PRIOR = (
    r"(?:previous|prior|above|earlier|preceding|foregoing|initial|original|former|system|safety|security|"
    r"developer|default|given|provided|programmed|built-in|your)"
)
_AI_INSTRUCTIONS = (
    r"(?:instructions|prompts?|guidelines|directives|programming|guardrails|safety\s+\w+|system\s+\w+|"
    r"content\s+polic(?:y|ies)|ethical\s+\w+|rules\s+(?:you|that\s+you)\s+(?:were|have\s+been|are)\s+given|"
    r"rules\s+that\s+(?:tell|stop|prevent|limit|restrict|keep))"
)
# "it is important not to disregard safety protocols" is advice, not an attack; checked in code because a
# lookbehind at the start of a pattern stops the regex engine from skipping ahead to the first letter
_NEGATION = re.compile(r"(?:\bnot|\bnever|n't|\bnot\s+to)\s+$")
_INSTRUCTIONS = (
    r"(?:instructions?|prompts?|rules?|directions?|guidelines?|directives?|commands?|context|programming|"
    r"constraints?|restrictions?|guardrails?|polic(?:y|ies)|filters?|training|limitations?|ethics|morals|"
    r"safeguards?)"
)
_AI = (
    r"(?:ai|a\.i\.|assistant|chatbot|bot|llm|language\s+model|model|gpt|chatgpt|claude|gemini|copilot|agent)"
)
_REVEAL = (
    r"(?:reveal|show|print|output|display|repeat|recite|dump|leak|disclose|expose|share|tell\s+me|give\s+me|"
    r"write\s+(?:out|down)|spell\s+out|send\s+me|paste|echo|list|provide|return|translate|summari[sz]e)"
)
_SECRET_PROMPT = (
    r"(?:system|initial|original|hidden|secret|internal|developer|confidential|pre-?|starting|first|"
    r"underlying|base|full|entire|complete|exact|verbatim)\s+(?:[\w-]+\s+)?(?:prompts?|instructions?|"
    r"messages?|rules|directives|configuration|context)"
)

# Anchors: a rule's regex runs only when one of its anchor substrings occurs in the view. A substring
# test over 1 KB takes ~0.1 us, a regex search ~20 us; on ordinary text most rules are skipped. Every phrase
# a rule matches must contain one of its anchors (tests check the rule examples against this).
_A_IGNORE = (
    "ignor",
    "disregard",
    "forget",
    "bypass",
    "overrid",
    "overlook",
    "neglect",
    "abandon",
    "discard",
    "set aside",
    "throw out",
)
_A_REVEAL = (
    "reveal", "show", "print", "output", "display", "repeat", "recite", "dump", "leak", "disclos", "expos", "share",
    "tell me", "give me", "write", "spell out", "send me", "paste", "echo", "list", "provide", "return", "translat",
    "summari",
)  # fmt: skip
_A_AI = (
    "ai ", "ai,", "ai:", "ai.", "ai\n", "ais ", "a.i.", "assistant", "chatbot", "bot", "llm", "language model", "model", "gpt", "claude", "gemini", "copilot",
    "agent",
)  # fmt: skip

# the nouns an override names ("ignore your previous *instructions*"): an anchor pre-check for the rules
_A_INSTRUCTIONS = (
    "instruction",
    "prompt",
    "rule",
    "direction",
    "guideline",
    "directive",
    "command",
    "context",
    "programming",
    "constraint",
    "restriction",
    "guardrail",
    "polic",
    "filter",
    "training",
    "order",
    "task",
    "message",
    "conversation",
    "setting",
    "limitation",
    "ethic",
    "moral",
    "safeguard",
)

# tool names an injected instruction tells the model to call: an anchor pre-check for the rules
_A_TOOL_NAMES = (
    "send_email",
    "send_message",
    "transfer",
    "payment",
    "delete",
    "exec",
    "shell",
    "run_code",
    "file_read",
    "read_file",
    "write_file",
    "http_request",
    "fetch",
    "browse",
)

_EN: list[
    tuple[str, float, tuple[tuple[str, ...], ...], str]
    | tuple[str, float, tuple[tuple[str, ...], ...], str, bool]
] = [
    # --- instruction override
    (
        "instruction_override",
        0.9,
        (
            _A_IGNORE,
            _A_INSTRUCTIONS,
        ),
        rf"\b{_IGNORE}\s+{_gap(3)}{_PRIOR}\s+{_gap(2)}{_INSTRUCTIONS}\b",
    ),
    (
        "instruction_override",
        0.7,
        (
            _A_IGNORE,
            _A_INSTRUCTIONS,
        ),
        rf"\b{_IGNORE}\s+(?:about\s+)?(?:all\s+|any\s+|the\s+|these\s+|those\s+|every\s+)+{_gap(1)}{_AI_INSTRUCTIONS}\b",
    ),
    (
        "instruction_override",
        0.8,
        (_A_IGNORE, ("above", "foregoing", "preceding", "previous", "prior")),
        rf"\b{_IGNORE}\s+(?:all\s+)?(?:of\s+)?(?:the\s+|what's\s+|what\s+is\s+)?(?:above|foregoing|preceding|previous|prior)\b(?=\s*(?:[.,;:!\n]|$|and\b|then\b|instead\b|(?:instructions?|text|content|prompts?|directions?|commands?|context|rules)\b))",
    ),
    (
        "instruction_override",
        0.8,
        (("regardless", "irrespective", "no matter"),),
        r"\b(?:regardless\s+of|irrespective\s+of|no\s+matter)\s+(?:what\s+)?(?:any\s+|all\s+|the\s+|your\s+)?(?:previous|prior|above|earlier|original|system)\s+(?:instructions?|tasks?|rules|prompts?|guidelines|directions|commands)",
    ),
    (
        "instruction_override",
        0.6,
        (("you ",), ("have to", "must", "will", "shall"), ("all", "every", "any", "whatever")),
        r"\byou\s+(?:have\s+to|must|will|shall)\s+(?:now\s+)?(?:answer|comply\s+with|obey|do|fulfil+|respond\s+to)\s+(?:all|every|any|everything|whatever)\b",
    ),
    (
        "instruction_override",
        0.9,
        (
            _A_IGNORE,
            (
                "told",
                "said",
                "given",
                "instructed",
                "wrote",
                "above",
                "before",
                "previously",
                "so far",
                "earlier",
            ),
        ),
        rf"\b{_IGNORE}\s+(?:all\s+|everything\s+|anything\s+)?(?:of\s+)?(?:what|ever?y?thing|anything|all)\s+(?:(?:you\s+were|you've\s+been|you\s+have\s+been|i|we)\s+(?:told|said|given|instructed|wrote)|(?:written\s+|stated\s+|said\s+)?(?:above|before|previously|so\s+far|earlier))",
    ),
    (
        "instruction_override",
        0.85,
        (("not ", "n't ", "never", "stop"), ("follow", "obey", "listen", "adher")),
        rf"\b(?:do\s+not|don't|never|stop)\s+(?:follow(?:ing)?|obey(?:ing)?|listen(?:ing)?\s+to|adher(?:e|ing)\s+to)\s+{_gap(2)}{_PRIOR}?\s*{_gap(1)}{_INSTRUCTIONS}\b",
    ),
    (
        "instruction_override",
        0.8,
        (
            ("instruction", "directive", "order", "task", "command", "rule"),
            (
                "new",
                "updated",
                "revised",
                "real",
                "actual",
                "true",
                "important",
                "urgent",
                "priority",
                "additional",
                "secret",
                "hidden",
            ),
        ),
        r"\b(?:new|updated|revised|real|actual|true|important|urgent|priority|additional|secret|hidden)\s+(?:important\s+|priority\s+|system\s+)?(?:instructions?|directives?|orders|task|commands?|rules)\s*(?:[:!\-*#]|\bfollow\b|\bare\b|\bis\b)",
    ),
    (
        "instruction_override",
        0.75,
        (("your ",), ("new", "real", "actual", "true", "only", "updated")),
        r"\byour\s+(?:new|real|actual|true|only|updated)\s+(?:task|goal|objective|instructions?|purpose|mission|role|job|directive)\s+(?:is|are|will\s+be|now)\b",
    ),
    (
        "instruction_override",
        0.6,
        (("from now on",),),
        r"\bfrom\s+now\s+on\s*,?\s+(?:you\s+(?:are|will|must|shall|should|have|can|may)|only|always|never|answer|respond|reply|ignore)\b",
    ),
    (
        "instruction_override",
        0.85,
        (("you are", "you have been", "you were"), ("free", "releas", "liberat", "unshackl", "no longer")),
        r"\byou\s+(?:are|have\s+been|were)\s+(?:now\s+)?(?:freed|free|released|liberated|unshackled|no\s+longer\s+(?:bound|restricted|limited|constrained))\b",
    ),
    (
        "instruction_override",
        0.85,
        (
            ("without", "no ", "free of", "free from"),
            (
                "restrictions",
                "limitations",
                "limits",
                "filter",
                "censorship",
                "guidelines",
                "rules",
                "boundaries",
                "constraints",
                "safeguards",
            ),
        ),
        r"\b(?:without|no|free\s+of|free\s+from|with\s+no)\s+(?:any\s+)?(?:content\s+|ethical\s+|moral\s+|safety\s+)?(?:restrictions|limitations|limits|filters?|filtering|censorship|guidelines|rules|boundaries|constraints|safeguards)\b",
    ),
    (
        "instruction_override",
        0.9,
        (
            (
                "overrid",
                "overrul",
                "supersed",
                "replac",
                "reset",
                "disabl",
                "deactivat",
                "turn off",
                "switch off",
                "remov",
                "lift",
                "suspend",
            ),
            (
                "instruction",
                "prompt",
                "filter",
                "guideline",
                "restriction",
                "rule",
                "polic",
                "protocol",
                "setting",
                "safeguard",
                "guardrail",
                "mode",
            ),
        ),
        rf"\b(?:override|overrule|supersede|replace|reset|disable|deactivate|turn\s+off|switch\s+off|remove|lift|suspend)\s+{_gap(2)}(?:safety|content|security|ethical|moral|system|previous|your|all|the)\s+{_gap(1)}(?:instructions|prompt|filters?|guidelines|restrictions|rules|polic(?:y|ies)|protocols?|settings|safeguards|guardrails|mode)\b",
    ),
    (
        "instruction_override",
        0.7,
        (
            (
                "suspend",
                "lifted",
                "disabled",
                "removed",
                "void",
                "null",
                " off",
                "updated",
                "revoked",
                "deactivated",
            ),
            ("rules", "restrictions", "policies", "guidelines", "filters"),
        ),
        r"\b(?:normal|usual|standard|all|previous|safety|content)\s+(?:rules|restrictions|policies|guidelines|filters)\s+(?:are|have\s+been|is)\s+(?:now\s+)?(?:suspended|lifted|disabled|removed|void|null|off|updated|revoked|deactivated)\b",
    ),
    (
        "instruction_override",
        0.7,
        (
            ("stop", "cancel", "abort", "halt"),
            ("instead", "now", "new", "your", "you must", "you will", "you should"),
        ),
        r"\b(?:stop|cancel|abort|halt)\s+(?:the\s+|your\s+|what\s+you(?:'re|\s+are)\s+doing|all\s+)?(?:current\s+|previous\s+|above\s+)?(?:task|summar\w*|translation|analysis|work|processing)?\s*[.!:,]\s*(?:instead|now|new|your|you\s+(?:must|will|should))",
    ),
    # --- persona hijack / jailbreak personas
    (
        "persona_hijack",
        0.85,
        (
            (
                "you are",
                "you're",
                "act as",
                "pretend",
                "roleplay",
                "role-play",
                "imagine you",
                "behave",
                "become",
            ),
            (
                "rule",
                "restriction",
                "limit",
                "filter",
                "guideline",
                "ethic",
                "moral",
                "boundar",
                "censor",
                "constraint",
                "safeguard",
                "polic",
                "principle",
            ),
        ),
        rf"\b(?:you\s+are\s+(?:now\s+)?|you're\s+(?:now\s+)?|act\s+as\s+|pretend\s+(?:to\s+be\s+|you\s+are\s+|that\s+you\s+are\s+)|roleplay\s+as\s+|role-play\s+as\s+|imagine\s+you\s+are\s+|behave\s+(?:like|as)\s+|become\s+)(?:an?\s+)?(?:[\w-]+\s+){{0,3}}(?:{_AI}\s+)?(?:with(?:out)?\s+(?:any\s+|no\s+)?|that\s+(?:has|have)\s+no\s+|free\s+(?:of|from)\s+|who\s+(?:has|have)\s+no\s+|who\s+(?:doesn't|does\s+not|don't|never)\s+(?:have|follow|care)\s+)(?:\w+\s+)?(?:rules|restrictions|limits|limitations|filters?|guidelines|ethics|morals|morality|boundaries|censorship|constraints|safeguards|policies|principles|content\s+polic)",
    ),
    (
        "persona_hijack",
        0.9,
        (
            ("mode",),
            (
                "developer",
                "dev ",
                "god",
                "debug",
                "admin",
                "sudo",
                "jailbr",
                "unrestricted",
                "unfiltered",
                "uncensored",
                "evil",
                "chaos",
                "opposite",
                "dan",
                "dude",
                "stan",
                "aim",
            ),
        ),
        r"\b(?:jailbreak|jailbroken|unrestricted|unfiltered|uncensored|evil|chaos|opposite|dan|dude|stan|aim|anti-dan)\s+mode\b|\b(?:enable|enabled|activate|activated|enter|entering|switch\s+to|you\s+are\s+(?:now\s+)?in|with)\s+(?:the\s+)?(?:developer|dev|god|debug|admin|sudo)\s+mode\b",
    ),
    (
        "persona_hijack",
        0.9,
        (
            (
                "do anything",
                "machiavellian",
                "norms",
                "jailbr",
                "unrestricted",
                "uncensored",
                "unfiltered",
                "moral",
                "ethical",
            ),
        ),
        r"\b(?:do\s+anything\s+now|always\s+intelligent\s+and\s+machiavellian|strive\s+to\s+avoid\s+norms|jailbr(?:e|o)ak(?:en|ed)?\s+(?:ai|version|model|assistant|chatgpt|llm)|unrestricted\s+(?:ai|assistant|chatbot|model|version|llm)|uncensored\s+(?:ai|assistant|chatbot|model|llm)|unfiltered\s+(?:ai|assistant|chatbot|model|llm)|without\s+any\s+(?:moral|ethical)\s+(?:or\s+ethical\s+)?(?:bias|constraints|guidelines))\b",
    ),
    (
        "persona_hijack",
        0.75,
        (
            (
                "dan:",
                "dan,",
                "dan ",
                "dude",
                "stan:",
                "stan,",
                "stan ",
                "aim:",
                "aim,",
                "aim ",
                "kevin",
                "antigpt",
                "evilbot",
                "nraf",
                "ucar",
                "maximum",
            ),
        ),
        r"\b(?:dan|dude|stan|aim|kevin|betterdan|antigpt|evilbot|nraf|ucar|maximum)\s*(?::|,\s*(?:you|which|who)|\s+(?:can|will|has|is\s+an?|stands\s+for|does\s+not|doesn't|never))",
    ),
    (
        "persona_hijack",
        0.7,
        (("in character", "break character"),),
        r"\b(?:stay\s+in\s+character|break\s+character)\b",
    ),
    (
        "persona_hijack",
        0.7,
        (("two ", "2 "), ("responses", "answers", "paragraphs"), ("normal", "chatgpt", "with")),
        r"\b(?:two|2)\s+(?:different\s+)?(?:responses|answers|paragraphs)\s*[:(,]?\s*(?:one|1)\s+(?:normal|as\s+chatgpt|with)\b",
    ),
    (
        "persona_hijack",
        0.7,
        (("simulate", "hypothetical"), _A_AI),
        r"\b(?:simulate\s+(?:a|an)\s+(?:\w+\s+){0,2}(?:ai|chatbot|model)|hypothetical\s+(?:ai|model|chatbot)\s+(?:that|which|with|called))\b",
    ),
    (
        "persona_hijack",
        0.65,
        (("you are", "forget", "ignore"), ("no longer", "not ", "forget", "ignore")),
        rf"\byou\s+are\s+(?:no\s+longer|not)\s+(?:an?\s+)?(?:\w+\s+)?{_AI}\b|\b(?:forget|ignore)\s+(?:that\s+)?you\s+are\s+(?:an?\s+)?(?:\w+\s+)?{_AI}\b",
    ),
    (
        "authority_claim",
        0.6,
        (
            ("i am", "i'm", "this is"),
            (
                "developer",
                "creator",
                "admin",
                "owner",
                "maintainer",
                "operator",
                "programmer",
                "openai",
                "anthropic",
            ),
        ),
        r"\b(?:i\s+am|i'm|this\s+is)\s+(?:your|the|an?)\s+(?:developer|creator|admin|administrator|owner|maintainer|operator|programmer|system\s+administrator|openai|anthropic)\b",
    ),
    (
        "authority_claim",
        0.85,
        (
            ("admin", "system", "root", "developer", "sudo", "safe", "maintenance", "debug"),
            ("command", "override", "access granted", "mode", "safe"),
        ),
        r"\b(?:admin(?:istrator)?|system|root|developer|sudo)\s+(?:command|override|access\s+granted|mode\s+(?:enabled|activated|on))\b|\bsafe_?mode\s*[=:]\s*(?:false|off|0|disabled)\b|\bmaintenance\s+mode\b|\bdebug\s+mode\s+(?:enabled|activated|on)\b",
    ),
    # --- system prompt extraction
    (
        "prompt_extraction",
        0.9,
        (
            _A_REVEAL,
            ("prompt", "instruction", "message", "rules", "directive", "configuration", "context"),
            (
                "system",
                "initial",
                "original",
                "hidden",
                "secret",
                "internal",
                "developer",
                "confidential",
                "pre",
                "starting",
                "first",
                "underlying",
                "base",
                "full",
                "entire",
                "complete",
                "exact",
                "verbatim",
            ),
        ),
        rf"\b{_REVEAL}\s+{_gap(4)}(?:your|the|its|my|this)\s+{_SECRET_PROMPT}\b",
    ),
    (
        "prompt_extraction",
        0.85,
        (
            _A_REVEAL,
            ("instructions", "prompt", "rules", "directives", "guidelines", "programming", "configuration"),
        ),
        rf"\b{_REVEAL}\s+{_gap(3)}your\s+(?:[\w-]+\s+)?(?:instructions|prompt|rules|directives|guidelines|programming|configuration)\b",
    ),
    (
        "prompt_extraction",
        0.85,
        (("your",), ("instructions", "prompt", "rules", "directives", "guidelines")),
        r"\b(?:what|which)\s+(?:were|are|was|is)\s+your\s+(?:(?:original|initial|first|exact|system|hidden|secret|real)\s+)+(?:instructions|prompts?|rules|directives|guidelines)\b",
    ),
    (
        "prompt_extraction",
        0.8,
        (
            ("repeat", "print", "output", "recite", "return", "echo", "copy", "write"),
            ("above", "before this", "prior", "preceding", "came before", "starting"),
        ),
        r"\b(?:repeat|print|output|recite|return|echo|copy|write)\s+(?:back\s+)?(?:all\s+|everything\s+|the\s+(?:text|words|content|message|tokens)\s+)?(?:of\s+)?(?:above|before\s+this|prior|preceding|that\s+came\s+before|starting\s+(?:from|with))\b",
    ),
    (
        "prompt_extraction",
        0.75,
        (("beginning", "start", "top", "words"),),
        r"\b(?:beginning|start|top)\s+of\s+(?:this|the|our|your)\s+(?:conversation|prompt|context|chat|session|instructions)\b|\bstarting\s+(?:from|with)\s+[\"'“]?you\s+are\b|\bwords?\s+(?:written\s+)?(?:above|before)\s+(?:this|the\s+first)\b",
    ),
    (
        "prompt_extraction",
        0.55,
        (("password", "secret", "passphrase", "access code", "api key"), ("given", "told", "in your")),
        r"\b(?:password|secret\s+key|passphrase|access\s+code|secret\s+code|api\s+key)\s+(?:you\s+(?:were|have\s+been)\s+(?:given|told)|in\s+your\s+(?:instructions|prompt|memory))\b",
    ),
    (
        "secret_extraction",
        0.75,
        (
            (
                "password",
                "passcode",
                "passphrase",
                "pass phrase",
                "secret",
                "pin code",
                "access code",
                "api key",
            ),
        ),
        r"\b(?:what(?:'s|\s+is|\s+was|\s+would\s+be)|share|tell\s+me|give\s+me|reveal|confirm|provide|write|spell|say|print|show|disclose|leak|send\s+me|encode|translate)\s+(?:me\s+|us\s+)?(?:with\s+me\s+)?(?:the|your|ours|our|its)\s+(?:secret\s+|hidden\s+|stored\s+|current\s+)?(?:password|passcode|passphrase|pass\s+phrase|secret\s+(?:key|word|code)|pin\s+code|access\s+code|api\s+key)\b(?!\s+(?:requirements?|polic(?:y|ies)|rules|reset|manager|field|strength|length|recovery|change|expir))",
    ),
    # --- chat-template and role tokens, delimiter tricks
    (
        "role_token",
        0.95,
        (("<|", "<", "[inst", "[/inst"),),
        r"<\|(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id|end_header_id|begin_of_text|end_of_text|im_sep|channel|message|tool|ipython)\|>|\[/?inst\]|<</?sys>>|<(?:start|end)_of_turn>|<\|?(?:fim_prefix|fim_suffix)\|?>",
    ),
    (
        "role_token",
        0.8,
        (("<", "[", "{{", "(system"),),
        r"</?(?:system|system_prompt|sys|instructions?|admin|developer|assistant_instructions)>|\[(?:system|admin|developer)\s*(?:message|prompt|note|override)?\]|\{\{\s*system\s*\}\}|\(system\s+(?:message|prompt|note)\)",
    ),
    (
        "role_token",
        0.7,
        (("#", "system", "developer"),),
        r"##+\s*(?:system|instructions?|new\s+instructions?|admin|developer)\s*(?:prompt|message)?\s*:?\s*#*\s*(?:\n|$)|\b(?:system|developer)\s*(?:message|prompt)?\s*:\s*(?:you|ignore|new|from|the\s+assistant|assistant\s+must)",
    ),
    (
        "role_token",
        0.5,
        (("human", "user"),),
        r"\b(?:human|user)\s*:\s*[^\n]{0,200}\n\s*(?:assistant|ai|gpt|bot)\s*:\s*(?:sure|ok|okay|of\s+course|certainly|here)",
    ),
    (
        "delimiter",
        0.8,
        (
            ("---", "===", "***", "###", "]]", "}}", "["),
            ("end", "input", "context", "begin", "document", "data"),
        ),
        r"(?:---+|===+|\*\*\*+|###+|\]\]+|\}\}+)\s*(?:end\s+of\s+(?:user\s+)?(?:input|prompt|context|document|data|email|text|instructions)|(?:user\s+)?input\s+ends?|context\s+end|begin\s+(?:new\s+)?(?:instructions?|system|admin))|\[(?:end\s+of\s+)?(?:context|document|input|data)\s*(?:end|ends|ended|over)?\]\s*(?:new|now|ignore|instructions?|system)",
    ),
    (
        "delimiter",
        0.75,
        (("<!--",),),
        rf"<!--(?:(?!-->)[\s\S]){{0,400}}?\b(?:{_AI}|ignore|instructions?|system|disregard|prompt|override|say|respond|reply|tell\s+the\s+user|output|print|password|follow\s+this\s+link)\b",
    ),
    # --- addressed to the AI from inside a document or tool result (indirect injection)
    (
        "indirect_address",
        0.85,
        (("if you are",), _A_AI),
        rf"\bif\s+you\s+are\s+(?:an?\s+)?(?:\w+\s+)?{_AI}\b",
    ),
    (
        "indirect_address",
        0.85,
        (("note", "message", "instruction", "attention", "important", "notice"), (" to ", " for "), _A_AI),
        rf"\b(?:note|message|instructions?|attention|important|notice)\s+(?:to|for)\s+(?:the\s+|any\s+|all\s+)?(?:\w+\s+)?{_AI}s?\b",
    ),
    (
        "indirect_address",
        0.85,
        (("dear", "hey", "hello", "attention"), _A_AI),
        rf"\b(?:dear|hey|hello|attention)\s+{_AI}s?\b",
    ),
    (
        "indirect_address",
        0.85,
        (
            ("when", "while", "if ", "before", "after"),
            ("summari", "process", "reading", "analy", "translat", "parsing", "answering"),
        ),
        r"\b(?:when|while|if|before|after)\s+(?:you\s+are\s+|you're\s+)?(?:summari[sz]ing|processing|reading|analy[sz]ing|translating|parsing|answering\s+(?:questions\s+)?about)\s+(?:this|the)\s+(?:email|document|page|text|file|message|article|content|data|review)\s*,?\s+(?:you\s+(?:must|should|will|need)|please|always|also|do\s+not|don't|ignore|instead|include|add|say|tell|respond|reply|output|make\s+sure)",
    ),
    (
        "indirect_address",
        0.7,
        (_A_AI,),
        rf"\b{_AI}s?\s*(?:,|:)\s*(?:please\s+)?(?:ignore|disregard|forget|you\s+must|you\s+should|you\s+will|stop|do\s+not|don't|instead|forward|send|reply|respond|output|say|print|tell\s+the\s+user|include|append|execute|call|run)\b",
        True,
    ),
    (
        "indirect_address",
        0.6,
        (("the user",), ("tell", "inform", "convince", "persuade", "instruct", "remind", "urge")),
        r"\b(?:tell|inform|convince|persuade|instruct|remind|urge)\s+the\s+user\s+(?:that|to)\b",
        True,
    ),
    (
        "indirect_address",
        0.6,
        (("respond", "reply", "answer"), ('with "', "with '", "with “")),
        r"\b(?:respond|reply|answer)\s+(?:only\s+)?with\s+[\"'“]",
        True,
    ),
    (
        "indirect_address",
        0.6,
        (("response", "answer", "reply", "summary", "output"), ("must", "should"), ('"', "'", "“")),
        r"\b(?:your\s+response|your\s+answer|your\s+reply|your\s+summary|your\s+output|response|answer|reply|summary|output)\s+(?:must|should)\s+(?:only\s+)?(?:be|say|contain|include|start\s+with|end\s+with)\s+[\"'“]",
        True,
    ),
    (
        "indirect_address",
        0.55,
        (("ignore", "disregard"),),
        r"\b(?:please\s+ignore|please\s+disregard|ignore|disregard)\s+(?:the\s+)?(?:user(?:'s)?|the\s+above|above|previous)\s*(?:request|question|query|task)?\s*(?:and|,|\.)\s*(?:instead|now|just|only)?\s*(?:say|print|output|write|reply|respond|tell|send|do)\b",
        True,
    ),
    (
        "exfiltration_request",
        0.85,
        (
            (" to ",),
            (
                "send",
                "forward",
                "email",
                "e-mail",
                "post",
                "upload",
                "transmit",
                "exfiltrat",
                "leak",
                "copy",
                "bcc",
                "cc",
                "mail",
            ),
            ("http", "www.", "@", "attacker", "the following", "this address", "this url", "this email"),
        ),
        r"\b(?:send|forward|email|e-mail|post|upload|transmit|exfiltrate|leak|copy|bcc|cc|mail)\s+(?:\w+\s+){0,5}(?:conversation|chat\s+history|history|credentials?|passwords?|api\s+keys?|tokens?|secrets?|emails?|inbox|contacts|files?|documents?|personal\s+(?:data|information)|user\s+data|data|messages?|list|records|database|them|it|this|these|those|everything|all)\s+(?:\w+\s+){0,3}to\s+(?:https?://|www\.|[\w.+-]+@[\w-]+\.|attacker|the\s+following|this\s+(?:address|url|email))",
    ),
    (
        "exfiltration_request",
        0.8,
        (("![", "render", "display", "include", "embed", "insert", "append"),),
        r"!\[[^\]\n]{0,100}\]\(\s*https?://[^)\s]{1,300}[?&][\w-]{1,40}=[^)\s]{0,200}(?:\[|\{|%5b|%7b|<|\$)|\b(?:render|display|include|embed|insert|append)\s+(?:\w+\s+){0,4}(?:image|markdown|img|link|url)\s+(?:\w+\s+){0,6}(?:https?://|!\[)",
    ),
    (
        "obfuscation",
        0.8,
        (
            ("decode", "decrypt", "translate", "convert", "read"),
            (
                "base64",
                "base 64",
                "hex",
                "rot13",
                "rot-13",
                "binary",
                "morse",
                "cipher",
                "encoded",
                "caesar",
                "base32",
            ),
        ),
        r"\b(?:decode|decrypt|translate|convert|read)\s+(?:\w+\s+){0,4}(?:base\s?64|base32|hex|rot-?13|binary|morse|cipher|encoded|caesar)\b[^.\n]{0,60}?\b(?:and|then)\s+(?:\w+\s+){0,2}(?:follow|do|execute|obey|run|act\s+on|carry\s+out|perform|comply)",
    ),
    (
        "tool_abuse",
        0.85,
        (
            ("call", "use", "invoke", "run", "execute", "trigger"),
            _A_TOOL_NAMES,
        ),
        r"\b(?:call|use|invoke|run|execute|trigger)\s+(?:the\s+)?[\w.-]*(?:send_email|send_message|transfer|payment|delete|exec|execute|shell|run_code|file_read|read_file|write_file|http_request|fetch|browse)\w*\s+(?:tool|function|api|command)?\s*(?:with|to|on|and|without)\b",
        True,
    ),
    (
        "tool_abuse",
        0.7,
        (
            ("call", "use", "invoke", "run", "execute", "trigger"),
            _A_TOOL_NAMES,
        ),
        r"\b(?:call|use|invoke|run|execute|trigger)\s+(?:the\s+)?[\w.-]*(?:send_email|send_message|transfer|payment|delete|exec|execute|shell|run_code|file_read|read_file|write_file|http_request|fetch|browse)\w*\s+(?:tool|function|api|command)?\s*(?:with|to|on|and|without)\b",
    ),
]

# A few major languages, on the lowercased text without homoglyph folding (it would mangle Cyrillic).
_INTL: list[tuple[str, float, tuple[tuple[str, ...], ...], str]] = [
    (
        "instruction_override_de",
        0.9,
        (
            ("ignorier", "vergiss", "vergessen", "missacht", "überg"),
            ("anweisung", "instruktion", "befehl", "regel", "vorgabe", "richtlinie", "anordnung"),
        ),
        r"\b(?:ignorier(?:e|en|t)?|vergiss|vergessen\s+sie|missachte|übergehe?)\s+(?:\w+\s+){0,3}(?:vorherigen?|bisherigen?|obigen?|vorigen?|früheren?|alle[n]?|deine[n]?|ihre[n]?)\s+(?:\w+\s+){0,2}(?:anweisungen|instruktionen|befehle|regeln|vorgaben|richtlinien|anordnungen)\b",
    ),
    (
        "instruction_override_de",
        0.85,
        (("zeig", "gib", "nenne", "verrate", "wiederhol", "druck", "du bist", "ohne"),),
        r"\b(?:zeige?|gib|nenne|verrate|wiederhole|drucke)\s+(?:mir\s+)?(?:\w+\s+){0,2}(?:deinen?|ihren?|den|die)\s+(?:system-?\s?prompt|systemanweisungen|anweisungen|geheimen?\s+\w+)\b|\bdu\s+bist\s+(?:jetzt|nun|ab\s+sofort)\s+(?:ein|eine|der|die|im)\b|\bohne\s+(?:jegliche\s+)?(?:einschränkungen|regeln|filter|beschränkungen)\b",
    ),
    (
        "instruction_override_fr",
        0.9,
        (
            ("ignor", "oubli", "néglig", "tiens pas", "tient pas"),
            ("instruction", "consigne", "directive", "règle", "ordre"),
        ),
        r"\b(?:ignore[zrs]?|oublie[zrs]?|néglige[zr]?|ne\s+tiens?\s+pas\s+compte\s+d)\s*(?:\w+\s+){0,3}(?:instructions|consignes|directives|règles|ordres)\s*(?:\w+\s+){0,1}(?:précédentes|antérieures|ci-dessus|initiales|d'origine|système)?",
    ),
    (
        "instruction_override_fr",
        0.85,
        (("révèl", "montr", "affich", "donn", "répèt", "tu es", "sans"),),
        r"\b(?:révèle[zr]?|montre[zr]?|affiche[zr]?|donne[zr]?(?:-moi)?|répète[zr]?)\s+(?:\w+\s+){0,3}(?:prompt|instructions|consignes|message)\s+(?:\w+\s+){0,1}(?:système|initiales?|secrètes?|cachées?)\b|\btu\s+es\s+(?:maintenant|désormais|dorénavant)\b|\bsans\s+(?:aucune\s+)?(?:restrictions?|règles|limites|filtres?|censure)\b",
    ),
    (
        "instruction_override_es",
        0.9,
        (
            ("ignora", "olvida", "omite", "descarta", "no sigas"),
            ("instruccion", "indicacion", "órdenes", "reglas", "directrices", "normas"),
        ),
        r"\b(?:ignora[rd]?|olvida[rd]?|omite|descarta|no\s+sigas)\s+(?:\w+\s+){0,3}(?:instrucciones|indicaciones|órdenes|reglas|directrices|normas)\s*(?:\w+\s+){0,1}(?:anteriores|previas|iniciales|originales|del\s+sistema)?",
    ),
    (
        "instruction_override_es",
        0.85,
        (("revela", "muestra", "dime", "imprime", "repite", "dame", "ahora eres", "sin "),),
        r"\b(?:revela|muestra(?:me)?|dime|imprime|repite|dame)\s+(?:\w+\s+){0,3}(?:prompt|instrucciones|mensaje)\s+(?:\w+\s+){0,1}(?:del\s+sistema|de\s+sistema|iniciales|secretas|ocultas)\b|\bahora\s+eres\b|\bsin\s+(?:ninguna\s+)?(?:restricciones|reglas|límites|filtros|censura)\b",
    ),
    (
        "instruction_override_it",
        0.9,
        (
            ("ignora", "dimentica", "trascura", "non seguire"),
            ("istruzioni", "indicazioni", "regole", "direttive", "ordini"),
        ),
        r"\b(?:ignora(?:re)?|dimentica(?:re)?|trascura|non\s+seguire)\s+(?:\w+\s+){0,3}(?:istruzioni|indicazioni|regole|direttive|ordini)\s*(?:\w+\s+){0,1}(?:precedenti|iniziali|originali|di\s+sistema)?",
    ),
    (
        "instruction_override_it",
        0.85,
        (("rivela", "mostra", "dimmi", "stampa", "ripeti", "dammi", "ora sei", "senza"),),
        r"\b(?:rivela|mostra(?:mi)?|dimmi|stampa|ripeti|dammi)\s+(?:\w+\s+){0,3}(?:prompt|istruzioni|messaggio)\s+(?:\w+\s+){0,1}(?:di\s+sistema|del\s+sistema|iniziali|segrete|nascoste)\b|\bora\s+sei\b|\bsenza\s+(?:alcuna\s+)?(?:restrizioni|regole|limiti|filtri|censura)\b",
    ),
    (
        "instruction_override_pt",
        0.9,
        (
            ("ignor", "esqueç", "esquece", "desconsider"),
            ("instruç", "instruc", "regras", "diretrizes", "ordens"),
        ),
        r"\b(?:ignore|ignora|esqueça|esquece|desconsidere)\s+(?:\w+\s+){0,3}(?:instruções|instrucoes|regras|diretrizes|ordens)\s*(?:\w+\s+){0,1}(?:anteriores|prévias|iniciais|do\s+sistema)?",
    ),
    (
        "instruction_override_nl",
        0.9,
        (("negeer", "vergeet"),),
        r"\b(?:negeer|vergeet)\s+(?:\w+\s+){0,3}(?:instructies|regels|opdrachten|richtlijnen)\b",
    ),
    (
        "instruction_override_ru",
        0.9,
        (("игнор", "забудь", "не обращай", "покажи", "выведи", "раскрой", "повтори", "ты теперь"),),
        r"(?:игнорируй(?:те)?|проигнорируй(?:те)?|забудь(?:те)?|не\s+обращай(?:те)?\s+внимания\s+на)\s+(?:\w+\s+){0,3}(?:инструкции|указания|правила|команды|ограничения)|(?:покажи|выведи|раскрой|повтори)(?:те)?\s+(?:\w+\s+){0,2}(?:системный\s+промпт|системные\s+инструкции|свои\s+инструкции)|ты\s+теперь\b",
    ),
    (
        "instruction_override_zh",
        0.9,
        (
            (
                "忽略",
                "无视",
                "忘记",
                "忘掉",
                "不要",
                "输出",
                "显示",
                "告诉我",
                "打印",
                "泄露",
                "重复",
                "你现在是",
            ),
        ),
        r"(?:忽略|无视|忘记|忘掉|不要理会|不要遵守)(?:之前|以上|上面|先前|前面|所有|你的|全部)?.{0,6}?(?:指令|指示|说明|规则|提示|命令|设定)|(?:输出|显示|告诉我|打印|泄露|重复).{0,6}?(?:系统提示|系统指令|初始指令|提示词)|你现在是.{0,10}?(?:没有|不受).{0,6}?(?:限制|规则)",
    ),
    (
        "secret_extraction_intl",
        0.75,
        (
            (
                "mot de passe",
                "passwort",
                "contraseña",
                "password",
                "senha",
                "비밀번호",
                "암호",
                "パスワード",
                "密码",
            ),
        ),
        r"\b(?:quel\s+est|donne[zr]?[\s-]moi|révèle[zr]?|dis[\s-]moi)\s+(?:le|ton|votre)\s+mot\s+de\s+passe|\b(?:was\s+ist|nenne|verrate|gib\s+mir|sag\s+mir)\s+(?:mir\s+)?(?:das|dein|ihr|euer)\s+passwort|\b(?:cuál\s+es|dime|dame|revela)\s+(?:la|tu|su)\s+contraseña|\b(?:qual\s+è|dimmi|dammi|rivela)\s+(?:la\s+)?(?:tua\s+)?password|\b(?:qual\s+é|diga|me\s+dê|revele)\s+(?:a\s+)?(?:sua\s+)?senha|(?:비밀번호|암호).{0,12}?(?:알려|말해|보여|제공)|パスワード.{0,8}?(?:教え|表示|言|見せ)|(?:告诉我|说出|给我|透露).{0,6}?密码",
    ),
    ("instruction_override_ja", 0.75, (("無視して", "忽略して"),), r"(?:無視|忽略)して"),
    (
        "instruction_override_ja",
        0.9,
        (("無視", "忘れ", "システムプロンプト"),),
        r"(?:以前|前|上記|これまで|全て|すべて)の(?:指示|命令|ルール|設定)を(?:無視|忘れ)|システムプロンプトを(?:表示|出力|教え|見せ)",
    ),
    (
        "instruction_override_ko",
        0.9,
        (("무시", "잊어", "프롬프트"),),
        r"(?:이전|위의|모든|기존)\s*(?:지시|명령|규칙|지침)(?:사항)?(?:을|를|은|는)?\s*(?:무시|잊어)|시스템\s*프롬프트(?:를|을)?\s*(?:보여|출력|알려)",
    ),
    (
        "instruction_override_ar",
        0.9,
        (("تجاهل", "انس"),),
        r"(?:تجاهل|انس|انسى)\s+(?:\S+\s+){0,2}(?:التعليمات|الأوامر|القواعد)",
    ),
    (
        "instruction_override_hi",
        0.9,
        (("अनदेखा", "नज़रअंदाज़", "भूल"),),
        r"(?:पिछले|पहले\s+के|सभी)\s+(?:\S+\s+){0,2}(?:निर्देशों|निर्देश|नियमों)\s+(?:को\s+)?(?:अनदेखा|नज़रअंदाज़|भूल)",
    ),
]


def default_injection_rules() -> list[InjectionRule]:
    """The built-in rules: English over every de-obfuscated view, other languages over the plain view."""
    rules = [
        InjectionRule(spec[0], spec[1], _re(spec[3]), bool(spec[4]) if len(spec) > 4 else False, spec[2])  # type: ignore[misc]
        for spec in _EN
    ]
    rules += [
        InjectionRule(name, weight, re.compile(pat), False, anchors, False)
        for name, weight, anchors, pat in _INTL
    ]
    return rules


_WORD_TOKEN = re.compile(r"\w+")
# an anchor made of word characters only is matched at the start of a word (every rule's regex needs it there)
_WORD_ANCHOR = re.compile(r"[a-z0-9_]+")


class InjectionGuard(TextGuard):
    """Prompt-injection rules, over the text and its de-obfuscated views.

    Obfuscation is a signal in itself: invisible characters between letters, bidi overrides and Unicode
    tag characters add to the score even when no rule fires on the decoded text.

    Args:
        rules: the rules; `default_injection_rules()` by default.
        block_threshold: score at or above which the guard asks for `action`.
        flag_threshold: score at or above which the guard flags.
        action: what to ask for above `block_threshold` (`block`, or `escalate` to send it to a human).
        stages: where it runs (user input and tool results by default).
        name: the guard's name in verdicts.
        max_chars: scan at most this many characters.
    """

    def __init__(
        self,
        rules: Iterable[InjectionRule] | None = None,
        *,
        block_threshold: float = 0.75,
        flag_threshold: float = 0.5,
        action: Action = "block",
        stages: Iterable[Stage] = ("input",),
        name: str = "injection_rules",
        max_chars: int = DEFAULT_MAX_CHARS,
    ):
        super().__init__(name=name, stages=stages, max_chars=max_chars)
        self.rules = list(rules) if rules is not None else default_injection_rules()
        # each rule's regex is searched from its literal starts (see _fastre): ~10x cheaper than re.search
        self._rules = [(r, [frozenset(g) for g in r.anchors], PrefixRegex(r.pattern)) for r in self.rules]
        # each distinct anchor is tested once per view; rules then test their groups as set overlaps
        anchors = {a for r in self.rules for g in r.anchors for a in g}
        # an ASCII anchor of several words ("you are") is tested by its longest word: weaker, never stricter
        longest = {a: max(_WORD_TOKEN.findall(a), key=len, default="") for a in anchors if a.isascii()}
        words = {a for a, w in longest.items() if len(w) >= 2}
        self._word_anchors = tuple(sorted((a, longest[a][:4]) for a in words))
        self._ascii_anchors = tuple(sorted(a for a in anchors - words if a.isascii()))
        self._other_anchors = tuple(sorted(a for a in anchors - words if not a.isascii()))
        if not 0.0 < flag_threshold <= block_threshold <= 1.0:
            raise ConfigError(f"guard {name!r}: need 0 < flag_threshold <= block_threshold <= 1")
        self.block_threshold = block_threshold
        self.flag_threshold = flag_threshold
        self.action = check_action(action, name)

    def score(self, text: str, source: Source = "user") -> tuple[float, list[Span]]:
        """Score a text without turning it into a verdict (the benchmark and the classifier use this).

        Args:
            text: the text.
            source: who wrote it; some rules fire only on documents and tool results.

        Returns:
            `(score, spans)`: the combined score in 0..1 and where the rules fired.
        """
        embedded = source in ("tool_result", "document")
        fired: dict[str, float] = {}
        rules = self._rules
        spans: list[Span] = []
        views = variants(text)
        # rules in other scripts read the text only lowercased: folding look-alikes would mangle Cyrillic.
        # For ASCII text the plain view is that text already.
        scans: list[tuple[View, bool | None]] = [(v, True) for v in views]
        if text.isascii():
            scans[0] = (views[0], None)
        else:
            scans.append((View(text.lower(), "raw"), False))
        for view, folded in scans:
            low = view.text
            present = self._present(low)
            for rule, groups, fast in rules:
                if rule.embedded_only and not embedded:
                    continue
                if folded is not None and rule.folded != folded:
                    continue
                if not all(not group.isdisjoint(present) for group in groups):
                    continue
                m = fast.search(low)
                if m is None or (
                    rule.name == "instruction_override"
                    and _NEGATION.search(low, max(0, m.start() - 12), m.start())
                ):
                    continue
                label = rule.name if view.kind in ("plain", "raw") else f"{rule.name}:{view.kind}"
                start, end = view.to_original(m.start(), m.end())
                if fired.get(label, 0.0) < rule.weight:
                    fired[label] = rule.weight
                    spans.append(Span(start=start, end=end, excerpt=excerpt(text, start, end), label=label))
        invisible, bidi, tags = hidden_characters(text)
        if invisible >= 2:
            fired["hidden_characters"] = 0.5 if invisible < 5 else 0.7
        if bidi:
            fired["bidi_override"] = 0.4
        if tags:
            fired["tag_smuggling"] = 0.8
        if any(v.kind == "decoded" for v in views) and any(":decoded" in k for k in fired):
            # an instruction hidden in an encoding is more suspicious than the same words in plain text
            fired["encoded_instruction"] = 0.6
        keep = 1.0
        for weight in fired.values():
            keep *= 1.0 - weight
        return 1.0 - keep, spans

    def _present(self, low: str) -> set[str]:
        """The anchors that occur in `low`.

        Word anchors ("ignor", "instruction") are looked up among the 2-4 character prefixes of the text's
        words, built once per view; the rest ("you're", " to ", "<|") are substring tests, and non-ASCII
        ones run only on non-ASCII text. Testing 370 word anchors one by one with `in` took half a
        millisecond per kilobyte; the prefix set takes a tenth of that.
        """
        tokens = set(_WORD_TOKEN.findall(low))
        # word anchors are compared by their first four characters: a weaker test, never a stricter one
        keys = {t[:n] for t in tokens for n in (2, 3, 4)}
        present = {a for a, key in self._word_anchors if key in keys}
        present.update(a for a in self._ascii_anchors if a in low)
        if not low.isascii():
            present.update(a for a in self._other_anchors if a in low)
        return present

    def _check_text(self, text: str, context: GuardContext) -> list[Verdict]:
        score, spans = self.score(text, context.source)
        if score < self.flag_threshold:
            return []
        action: Action = self.action if score >= self.block_threshold else "flag"
        labels = sorted({s.label.split(":")[0] for s in spans}) or ["obfuscation"]
        return [
            Verdict(
                guard=self.name,
                category="injection",
                action=action,
                score=round(score, 4),
                spans=tuple(spans),
                message=f"possible prompt injection ({', '.join(labels)})",
            )
        ]
