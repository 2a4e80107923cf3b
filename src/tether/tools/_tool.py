"""`@tool`: a Python function becomes a tool with a JSON schema, a spec and validated arguments."""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_type_hints, overload

import anyio
import anyio.to_thread
from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic.fields import FieldInfo

from ..exceptions import ConfigError, ToolArgumentsError, ToolTimeout
from ..models import ToolDefinition

__all__ = ["Lookup", "Risk", "Seen", "Tool", "ToolContext", "ToolSpec", "render_output", "tool"]

Risk = Literal["low", "medium", "high", "critical"]


@dataclass(frozen=True, kw_only=True)
class ToolSpec:
    """What the runtime needs to know about a tool beyond its schema.

    Attributes:
        risk: how much harm a wrong call can do; approval policies decide by it.
        reversible: whether the effect can be undone (a lookup is; a refund is not).
        idempotent: whether running the call twice with the same idempotency key has the effect of running
            it once. An idempotent call that was in flight when a run stopped is re-run on resume;
            any other in-flight call is never re-run blindly.
        scopes: permissions the tool needs (`orders:read`); an agent grants scopes.
        timeout_s: how long one call may take before it fails with a timeout the model is told about.
        free_text: arguments whose values are the model's own words (a message body, a search query),
            exempt from the provenance check that every other value must pass.
        requires: tools that must have returned successfully earlier in the run before this one may run
            (look before you act: `refund` requires `lookup_order`).
        chains: the tool may be called with a number it returned itself (a calculator working in steps,
            paging by offset). Otherwise such a call is refused as a model going round in circles
            (converting an amount there and back) and the model is asked to answer.
        check: a precondition the tool declares on its arguments and on what earlier tools returned:
            `check(arguments, seen) -> str | None`, where `seen` is a `Seen` of this run's successful
            results. A string refuses the call before it runs (journaled as a `precondition` failure)
            and is told to the model as the reason; None lets it run. For rules the tool's own system
            does not enforce: a stock system that takes back-orders, where a reservation past the
            units a lookup showed is a mistake.
    """

    risk: Risk = "low"
    reversible: bool = True
    idempotent: bool = False
    scopes: tuple[str, ...] = ()
    timeout_s: float = 30.0
    free_text: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    chains: bool = False
    check: Callable[[dict[str, Any], Seen], str | None] | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Lookup:
    """One successful tool call of a run: its arguments and its result (parsed JSON, else the text)."""

    arguments: dict[str, Any]
    result: Any


class Seen:
    """What a run's tools have returned so far, for a tool's `check=` precondition to read."""

    __slots__ = ("_lookups",)

    def __init__(self, lookups: Sequence[tuple[str, dict[str, Any], str]] = ()) -> None:
        self._lookups = tuple(lookups)

    def results(self, tool: str, **arguments: Any) -> list[Lookup]:
        """The successful results of `tool`, newest first; with `arguments`, only calls made with those
        values (strings compared without case or surrounding space: `cs-402` is `CS-402`)."""
        found = []
        for name, args, content in reversed(self._lookups):
            if name != tool or any(not _same(args.get(k), v) for k, v in arguments.items()):
                continue
            try:
                result = json.loads(content)
            except ValueError:
                result = content
            found.append(Lookup(arguments=dict(args), result=result))
        return found


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.strip().casefold() == b.strip().casefold()
    return bool(a == b)


@dataclass(frozen=True, kw_only=True)
class ToolContext:
    """Passed to a tool that declares a parameter annotated `ToolContext`.

    Attributes:
        run_id: the run making the call.
        call_id: the call's id within the run.
        idempotency_key: stable across retries and resumes of this one call (`run_id:call_id`); pass it to
            the system the tool writes to so that a repeated call has no second effect.
        agent: the agent's name.
        step: the step (model call) that proposed the call, counted from 1.
    """

    run_id: str
    call_id: str
    idempotency_key: str
    agent: str
    step: int


_ARGS_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters):\s*$", re.MULTILINE)
_ARG_LINE = re.compile(r"^\s{2,}(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")
_SECTION_END = re.compile(r"^\s*(Returns|Raises|Yields|Examples?|Notes?|Attributes)\s*:\s*$")


def _parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its description and per-argument descriptions."""
    if not doc:
        return "", {}
    doc = inspect.cleandoc(doc)
    match = _ARGS_SECTION.search(doc)
    if not match:
        return doc.strip(), {}
    description = doc[: match.start()].strip()
    args: dict[str, str] = {}
    current: str | None = None
    for line in doc[match.end() :].splitlines():
        if _SECTION_END.match(line):
            break
        m = _ARG_LINE.match(line)
        if m:
            current = m.group(1).lstrip("*")
            args[current] = m.group(3).strip()
        elif current and line.strip():
            args[current] += " " + line.strip()
    return description, args


class _ArgsBase(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Tool:
    """A callable the model may ask to run, with its schema and spec.

    Made by `@tool`; call `await tool.invoke(arguments, ctx)` to validate and run it.
    """

    __slots__ = (
        "_args_model",
        "_ctx_param",
        "_fn",
        "_is_async",
        "_run_in_thread",
        "definition",
        "description",
        "name",
        "spec",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        spec: ToolSpec = ToolSpec(),
        run_in_thread: bool | None = None,
    ):
        self._fn = fn
        self.name = name or fn.__name__
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}", self.name):
            raise ConfigError(
                f"tool name {self.name!r} is not valid; use letters, digits, '_' or '-' (at most 64)"
            )
        self.spec = spec
        self._is_async = inspect.iscoroutinefunction(fn)
        # A sync tool runs in a worker thread by default so that one that hangs can be timed out and
        # does not stall every other run on the event loop; trivial CPU-only tools may opt out, and then
        # their timeout cannot be enforced.
        self._run_in_thread = (not self._is_async) if run_in_thread is None else run_in_thread
        if self._is_async and self._run_in_thread:
            raise ConfigError(f"tool {self.name!r} is async; run_in_thread applies only to sync functions")
        doc_description, arg_docs = _parse_docstring(fn.__doc__)
        self.description = description if description is not None else doc_description
        self._args_model, self._ctx_param = self._build_args_model(fn, arg_docs)
        schema = self._args_model.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        self.definition = ToolDefinition(name=self.name, description=self.description, parameters=schema)

    def _build_args_model(
        self, fn: Callable[..., Any], arg_docs: Mapping[str, str]
    ) -> tuple[type[BaseModel], str | None]:
        try:
            hints = get_type_hints(fn)
        except NameError as exc:
            raise ConfigError(
                f"tool {self.name!r}: a type hint could not be resolved ({exc}); "
                "import the type at module level"
            ) from exc
        fields: dict[str, Any] = {}
        ctx_param: str | None = None
        for pname, param in inspect.signature(fn).parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ConfigError(f"tool {self.name!r}: *args and **kwargs cannot be described to a model")
            annotation = hints.get(pname, Any)
            if annotation is ToolContext:
                ctx_param = pname
                continue
            if pname not in hints:
                raise ConfigError(
                    f"tool {self.name!r}: parameter {pname!r} has no type hint; "
                    "the model needs one to know what to pass"
                )
            default = ... if param.default is inspect.Parameter.empty else param.default
            if isinstance(default, FieldInfo):
                fields[pname] = (annotation, default)
            else:
                fields[pname] = (annotation, FieldInfo(default=default, description=arg_docs.get(pname)))
        model = create_model(f"{self.name}_args", __base__=_ArgsBase, **fields)
        return model, ctx_param

    def validate(self, arguments: Mapping[str, Any] | str) -> dict[str, Any]:
        """Check arguments against the schema and return them coerced to the declared types.

        Raises:
            ToolArgumentsError: with a message the model can act on.
        """
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                raise ToolArgumentsError(
                    f"arguments for {self.name!r} are not valid JSON ({exc.msg} at position {exc.pos}); "
                    "send a JSON object matching the tool's schema"
                ) from None
            if not isinstance(arguments, dict):
                raise ToolArgumentsError(f"arguments for {self.name!r} must be a JSON object")
        try:
            parsed = self._args_model.model_validate(arguments)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}" for err in exc.errors()
            )
            raise ToolArgumentsError(
                f"invalid arguments for {self.name!r}: {problems}. Expected schema: "
                f"{json.dumps(self.definition.parameters, separators=(',', ':'))}"
            ) from None
        return {k: getattr(parsed, k) for k in type(parsed).model_fields}

    async def invoke(self, arguments: Mapping[str, Any] | str, ctx: ToolContext) -> Any:
        """Validate `arguments`, run the tool within its timeout and return what it returned.

        Raises:
            ToolArgumentsError: the arguments do not fit the schema (nothing ran).
            ToolTimeout: the call ran longer than `spec.timeout_s`.
            Exception: whatever the tool itself raised.
        """
        return await self.execute(self.validate(arguments), ctx)

    async def execute(
        self, kwargs: dict[str, Any], ctx: ToolContext, *, timeout_s: float | None = None
    ) -> Any:
        """Run the tool with arguments already returned by `validate`, within its timeout.

        Args:
            timeout_s: a cap on `spec.timeout_s` (the agent's `Limits.tool_timeout_s`).

        Raises:
            ToolTimeout: the call ran longer than `spec.timeout_s`.
            Exception: whatever the tool itself raised.
        """
        if self._ctx_param:
            kwargs[self._ctx_param] = ctx
        if not self._is_async and not self._run_in_thread:
            # an inline sync call cannot be interrupted, so a timeout scope around it would only cost time
            return self._fn(**kwargs)
        limit = self.spec.timeout_s if timeout_s is None else min(timeout_s, self.spec.timeout_s)
        with anyio.move_on_after(limit) as scope:
            if self._is_async:
                return await self._fn(**kwargs)
            return await anyio.to_thread.run_sync(
                functools.partial(self._fn, **kwargs), abandon_on_cancel=True
            )
        assert scope.cancelled_caught
        raise ToolTimeout(
            f"tool {self.name!r} did not finish within its timeout of {limit:g}s; "
            "it was abandoned. Try again with other arguments or answer without it"
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the underlying function directly (for tests and plain Python use)."""
        return self._fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool({self.name!r}, risk={self.spec.risk!r})"


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    risk: Risk = "low",
    reversible: bool = True,
    idempotent: bool = False,
    scopes: tuple[str, ...] | list[str] = (),
    timeout_s: float = 30.0,
    free_text: tuple[str, ...] | list[str] = (),
    requires: tuple[str, ...] | list[str] = (),
    chains: bool = False,
    check: Callable[[dict[str, Any], Seen], str | None] | None = None,
    run_in_thread: bool | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    risk: Risk = "low",
    reversible: bool = True,
    idempotent: bool = False,
    scopes: tuple[str, ...] | list[str] = (),
    timeout_s: float = 30.0,
    free_text: tuple[str, ...] | list[str] = (),
    requires: tuple[str, ...] | list[str] = (),
    chains: bool = False,
    check: Callable[[dict[str, Any], Seen], str | None] | None = None,
    run_in_thread: bool | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Turn a function (sync or async) into a `Tool`.

    The JSON schema comes from the type hints, the descriptions from the Google-style docstring.
    A parameter annotated `ToolContext` receives the run's context and is hidden from the model.

    Example:
        ```python
        @tool(risk="high", reversible=False)
        def refund(order_id: str, amount: float) -> str:
            '''Refund part of an order.

            Args:
                order_id: the order to refund.
                amount: how much, in the order's currency.
            '''
        ```
    """
    if risk not in ("low", "medium", "high", "critical"):
        raise ConfigError(f"risk must be one of low, medium, high, critical; got {risk!r}")
    if timeout_s <= 0:
        raise ConfigError(f"timeout_s must be positive; got {timeout_s!r}")
    if check is not None and not callable(check):
        raise ConfigError(f"check must be a function (arguments, seen) -> str | None; got {check!r}")
    spec = ToolSpec(
        risk=risk,
        reversible=reversible,
        idempotent=idempotent,
        scopes=tuple(scopes),
        timeout_s=timeout_s,
        free_text=tuple(free_text),
        requires=tuple(requires),
        chains=chains,
        check=check,
    )

    def wrap(f: Callable[..., Any]) -> Tool:
        t = Tool(f, name=name, description=description, spec=spec, run_in_thread=run_in_thread)
        unknown = set(spec.free_text) - set(t.definition.parameters.get("properties", {}))
        if unknown:
            raise ConfigError(
                f"tool {t.name!r}: free_text names {sorted(unknown)}, which are not its parameters"
            )
        return t

    return wrap(fn) if fn is not None else wrap


def render_output(value: Any) -> str:
    """The text a model reads for a tool's return value."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)
