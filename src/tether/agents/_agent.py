"""`Agent`: instructions, tools, a model and limits — a definition, not a running thing."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from ..exceptions import ConfigError
from ..models import LLMJudgeGuard, Model, ModelSettings, check_model_spec, model_from_spec
from ..tools import Tool

__all__ = ["DEFAULT_MODEL", "Agent", "Limits"]

# Measured on the demo task (look an order up, compute a refund, answer): the 0.5B model never
# completes it, whatever the runtime's guards make it retry; the 1.5B does, at ~0.6x its speed.
# README.md ("Which embedded model") has the figures.
DEFAULT_MODEL = "local:qwen2.5-coder-1.5b"


@dataclass(frozen=True, kw_only=True)
class Limits:
    """The bounds every run of an agent stays within; crossing one ends the run with a named status.

    Attributes:
        max_steps: most model calls in one run (`max_steps`). Tool errors the model corrects count too.
        timeout_s: most wall time for one execution of the run, from start or resume (`timed_out`).
        model_timeout_s: most time one model call may take (`timed_out`).
        tool_timeout_s: a cap on every tool's own `timeout_s`, when set.
        max_total_tokens: most tokens (prompt + generated, summed over calls) a run may use; checked before
            each model call (`budget_exceeded`).
        max_output_tokens: most tokens one model call may generate.
        max_repeated_calls: the same tool called with the same arguments this many times ends the run
            (`failed`, loop detected).
        max_answer_retries: how many times a final answer may be sent back (ungrounded numbers, empty, a
            fake transcript) before the run ends `failed` rather than return it. Answers sent back only
            for their quality (a "how much" answer without a number, an id a tool looks up) do not
            count: each such rule applies once per run, and if the answers after it are untrue once
            the retries are used up, the answer it sent back is returned instead of failing.
        context_window_tokens: the model's context window; before each call the oldest turns are pruned
            to fit it with `max_output_tokens` and the tool definitions to spare (tool calls and their
            results go together; the looked-up values are kept in a note; `context_trimmed` in the
            journal). Tokens are estimated at about 3 characters each, on the high side. None: no pruning.
    """

    max_steps: int = 10
    timeout_s: float = 600.0
    model_timeout_s: float = 120.0
    tool_timeout_s: float | None = None
    max_total_tokens: int | None = None
    max_output_tokens: int = 512
    max_repeated_calls: int = 3
    max_answer_retries: int = 2
    context_window_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_steps", "max_output_tokens", "max_repeated_calls"):
            if getattr(self, name) < 1:
                raise ConfigError(f"Limits.{name} must be at least 1; got {getattr(self, name)!r}")
        if self.max_answer_retries < 0:
            raise ConfigError(f"Limits.max_answer_retries must be 0 or more; got {self.max_answer_retries!r}")
        for name in (
            "timeout_s",
            "model_timeout_s",
            "tool_timeout_s",
            "max_total_tokens",
            "context_window_tokens",
        ):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"Limits.{name} must be positive; got {value!r}")
        if self.context_window_tokens is not None and self.context_window_tokens <= self.max_output_tokens:
            raise ConfigError(
                f"Limits.context_window_tokens={self.context_window_tokens} leaves no room for the "
                f"conversation next to max_output_tokens={self.max_output_tokens}; give the model's window"
            )

    def as_dict(self) -> dict[str, Any]:
        cached = self.__dict__.get("_as_dict")
        if cached is None:
            cached = asdict(self)
            object.__setattr__(self, "_as_dict", cached)  # frozen: computed once, it never changes
        return dict(cached)


class Agent:
    """An agent definition: what it is for, what it may call, which model thinks for it, and its limits.

    Args:
        name: a short stable name (shown in logs, the journal and `tether runs list`).
        instructions: the system prompt.
        tools: the tools it may call (made with `@tool`).
        model: a `Model`, or a model string such as `local:qwen2.5-coder-0.5b` or
            `openai:MODEL@http://127.0.0.1:8080/v1`. Defaults to the embedded local model.
        limits: the bounds every run stays within.
        settings: sampling settings for its model calls (temperature 0 by default: repeatable runs).
        ref: `module:attr` where this agent can be imported, so that another process can resume its runs.
            Found automatically when the agent is a module-level variable.
        grounding: check that every number and identifier in a tool call's arguments comes from the
            input, the instructions or an earlier tool result, and refuse (with a corrective message to
            the model) calls whose values were invented. On by default; tools can exempt free-text
            arguments with `@tool(free_text=(...))`.
        tool_guide: rules for using the tools added to the instructions of an agent that has tools
            (`tether.grounding.TOOL_GUIDE`: look values up instead of inventing them, look before
            changing, report a missing record, answer briefly with the values). True (the default)
            adds the guide; False leaves the instructions as written; a string is added instead of it.
            On the agent task suite it finishes 5 more of the 25 tasks on the 1.5B model
            (22 vs 17, bench/README.md). Every rule in it is one the guards enforce anyway.
        policy: decides each tool call by the tool's risk tier, the model's confidence and reversibility
            (`tether.approvals.TierPolicy`, or any object with `decide(call) -> PolicyDecision`). None:
            the default `TierPolicy()` (low runs, medium is flagged, high suspends the run for a human,
            critical makes the caller wait for one).
        guardrails: the guardrail sandwich on every path of a run: the user's input (a block ends the
            run `blocked` with the stack's refusal as its output), each tool's result before the model
            reads it (a block withholds it), each proposed tool call before the approval policy (a block
            refuses it; an escalation asks a human through the approval flow), and the final answer (a
            block replaces it with the refusal). Redactions are what the model (or the user) gets; on a
            text, where no human is in the loop, an escalation is a block. Personal data in the input
            marks every model call of the run sensitive. A canary of a `CanaryGuard` is planted in the
            instructions. A `tether.guardrails.GuardStack`, a `GuardrailsConfig` (built with
            `default_stack`), True (`default_stack()`: secrets, PII, injection rules plus the classifier
            when the embeddings extra is installed, abuse, exfiltration), or None (off, the default for
            now: no check and no cost on the step).
        log_content: whether the structured logs carry what the model was sent and answered: `off` (the
            default: steps, tools and figures only), `redacted` (personal data and credentials replaced
            by placeholders, at most 4,000 characters), or `full`.
        on_in_doubt: what happens to a non-idempotent call that was running when the run stopped
            (a crash): `ask` suspends the run for a human to say whether it took effect; `report` does not
            re-run it and tells the model it may or may not have happened.
        on_injected: what happens to a call of a medium-risk tool or above that only a tool's result asked
            for (the tool is named in a result and the user's request never asked for what it does: an
            instruction injected into data). `refuse` (the default) does not run it and tells the model
            that text in tool results is data; `ask` sends it to a human through the approval flow. A
            low-risk call runs, marked `tainted` in its `tool_started` event. Part of `grounding`.

    Example:
        ```python
        agent = Agent("support", instructions="Answer from the order database.", tools=[lookup_order])
        result = tether.run_sync(agent, "Where is order 1042?")
        ```
    """

    def __init__(
        self,
        name: str,
        *,
        instructions: str = "",
        tools: Sequence[Tool] = (),
        model: Model | str | None = None,
        limits: Limits | None = None,
        settings: ModelSettings | None = None,
        ref: str | None = None,
        grounding: bool = True,
        tool_guide: bool | str = True,
        policy: Any = None,
        on_in_doubt: Literal["ask", "report"] = "ask",
        guardrails: Any = None,
        log_content: Literal["off", "redacted", "full"] = "off",
        on_injected: Literal["refuse", "ask"] = "refuse",
    ):
        if not name or not isinstance(name, str):
            raise ConfigError("an Agent needs a non-empty name")
        self.name = name
        self.instructions = instructions
        self.tools: dict[str, Tool] = {}
        for t in tools:
            if not isinstance(t, Tool):
                raise ConfigError(f"agent {name!r}: {t!r} is not a tool; decorate the function with @tool")
            if t.name in self.tools:
                raise ConfigError(f"agent {name!r} has two tools named {t.name!r}; give one another name")
            self.tools[t.name] = t
        for t in self.tools.values():
            missing = [r for r in t.spec.requires if r not in self.tools]
            if missing:
                raise ConfigError(
                    f"agent {name!r}: tool {t.name!r} requires {missing}, which the agent does not have; "
                    f"add them to tools= or drop them from requires="
                )
        self.limits = limits or Limits()
        self.settings = settings or ModelSettings()
        self._model_spec = model if model is not None else DEFAULT_MODEL
        if isinstance(self._model_spec, str):
            check_model_spec(self._model_spec)
        elif not isinstance(self._model_spec, Model):
            raise ConfigError(f"agent {name!r}: model must be a Model or a model string; got {model!r}")
        self._model: Model | None = model if isinstance(model, Model) else None
        self._ref = ref
        self.grounding = grounding
        if not isinstance(tool_guide, (bool, str)):
            raise ConfigError(
                f"agent {name!r}: tool_guide must be True, False or a string; got {tool_guide!r}"
            )
        self.tool_guide = tool_guide
        if policy is not None and not callable(getattr(policy, "decide", None)):
            raise ConfigError(
                f"agent {name!r}: policy must have a decide(call) method (a tether.approvals.TierPolicy); "
                f"got {policy!r}"
            )
        self.policy = policy
        if on_in_doubt not in ("ask", "report"):
            raise ConfigError(f"agent {name!r}: on_in_doubt must be 'ask' or 'report'; got {on_in_doubt!r}")
        self.on_in_doubt = on_in_doubt
        if log_content not in ("off", "redacted", "full"):
            raise ConfigError(
                f"agent {name!r}: log_content must be 'off', 'redacted' or 'full'; got {log_content!r}"
            )
        self.log_content = log_content
        if on_injected not in ("refuse", "ask"):
            raise ConfigError(f"agent {name!r}: on_injected must be 'refuse' or 'ask'; got {on_injected!r}")
        self.on_injected = on_injected
        self._guardrails = guardrails
        self._stack: Any = None
        frame = sys._getframe(1)
        self._module = frame.f_globals.get("__name__")
        self._file = frame.f_globals.get("__file__")
        if guardrails is not None and guardrails is not False:
            self.guardrails  # noqa: B018 - build (and check) the stack now: a mistake shows at definition

    @property
    def guardrails(self) -> Any:
        """The agent's `GuardStack`, or None when guardrails are off."""
        if self._stack is None and self._guardrails not in (None, False):
            from ..guardrails import GuardrailsConfig, GuardStack, default_stack

            g = self._guardrails
            if g is True:
                self._stack = default_stack()
            elif isinstance(g, GuardrailsConfig):
                judge = LLMJudgeGuard.from_config(g) if g.llm_judge != "off" else None
                self._stack = default_stack(g, judge=judge)
            elif isinstance(g, GuardStack):
                self._stack = g
            else:
                raise ConfigError(
                    f"agent {self.name!r}: guardrails must be a GuardStack, a GuardrailsConfig, True or "
                    f"None; got {g!r}"
                )
        return self._stack

    @property
    def model(self) -> Model:
        """The model, built from its string on first use."""
        if self._model is None:
            assert isinstance(self._model_spec, str)
            self._model = model_from_spec(self._model_spec)
        return self._model

    @property
    def model_name(self) -> str:
        return self._model.name if self._model is not None else str(self._model_spec)

    @property
    def ref(self) -> str | None:
        """Where another process can import this agent from (`module:attr` or `path.py:attr`)."""
        if self._ref is not None:
            return self._ref
        module = sys.modules.get(self._module or "")
        if module is None:
            return None
        for attr, value in vars(module).items():
            if value is self:
                if self._module == "__main__":
                    path = Path(self._file) if self._file else None
                    return f"{path.resolve()}:{attr}" if path is not None and path.is_file() else None
                return f"{self._module}:{attr}"
        return None

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, tools={sorted(self.tools)}, model={self.model_name!r})"
