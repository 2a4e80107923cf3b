"""Tool-call guards: is the tool in the agent's scope, and do its arguments stay inside their limits.

Schema validation of arguments happens where tools are declared (`tether.tools`); these guards add the
per-deployment limits a schema cannot say: which paths, which hosts, which SQL, how much money.
Arguments arrive from a model that may be following an injected instruction, so every constraint fails
closed: a value it cannot interpret is a violation, not a pass.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from tether.exceptions import ConfigError

from ._base import check_action
from ._output import host_allowed
from ._verdict import Action, GuardContext, Span, Stage, ToolCallCheck, Verdict

__all__ = [
    "AmountLimit",
    "ArgumentConstraint",
    "DomainAllowlist",
    "PathAllowlist",
    "ReadOnlySQL",
    "ToolArgumentsGuard",
    "ToolScopeGuard",
]

_MISSING = object()


class ArgumentConstraint(Protocol):
    """A limit on one argument of a tool call.

    Attributes:
        argument: the argument's name; a dotted path (`payment.amount`) reaches into nested objects.
    """

    argument: str

    def violation(self, value: Any) -> str | None:
        """Why `value` breaks the limit, or `None` when it is within it."""
        ...


@dataclass(frozen=True, kw_only=True, slots=True)
class PathAllowlist:
    """The argument is a file path under one of `roots`, after `..` and `.` are resolved.

    Attributes:
        argument: the argument holding the path.
        roots: allowed directories (POSIX paths); a relative path is taken relative to the first root.
    """

    argument: str
    roots: Sequence[str]

    def violation(self, value: Any) -> str | None:
        """Why `value` is not a path under `roots`, or `None`."""
        if not isinstance(value, str) or not value:
            return f"{self.argument!r} must be a non-empty path string"
        if "\x00" in value:
            return f"{self.argument!r} contains a NUL byte"
        roots = [posixpath.normpath(r) for r in self.roots]
        path = value.replace("\\", "/")
        if not path.startswith("/"):
            path = posixpath.join(roots[0] if roots else "/", path)
        # normpath resolves "a/../../etc" lexically; a symlink inside a root is the tool's own concern
        path = posixpath.normpath(path)
        for root in roots:
            if path == root or path.startswith(root.rstrip("/") + "/"):
                return None
        return f"{self.argument!r} path {value!r} is outside the allowed roots {list(self.roots)}"


_SQL_COMMENT = re.compile(r"--[^\n]*|/\*[\s\S]*?(?:\*/|$)|#[^\n]*")
_SQL_LITERAL = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|\$\$[\s\S]*?\$\$")
_SQL_READ_START = {"select", "with", "explain", "show", "describe", "desc", "values", "table"}
_SQL_WRITE = re.compile(
    r"\b(?:insert|update|delete|drop|alter|create|truncate|grant|revoke|merge|upsert|attach|detach|pragma|"
    r"vacuum|copy|call|exec|execute|into|lock\s+table|set|rename|reindex|unload|install|handler|prepare|"
    r"deallocate|listen|notify|refresh|cluster|discard|reset|begin|commit|rollback|savepoint)\b"
    r"|\breplace\s+into\b|\bcomment\s+on\b|\bload\s+(?:data|extension)\b|\bdo\s+\$"
    # functions that write files or run commands from inside a SELECT
    r"|\b(?:pg_read_file|pg_write_file|lo_import|lo_export|load_file|xp_cmdshell|dblink_exec|sys_exec)\s*\("
)


@dataclass(frozen=True, kw_only=True, slots=True)
class ReadOnlySQL:
    """The argument is one read-only SQL statement (SELECT, WITH ... SELECT, EXPLAIN, SHOW).

    Comments and string literals are stripped before checking, so a keyword inside a literal does not
    count and a write hidden behind a comment does.

    Attributes:
        argument: the argument holding the SQL text.
    """

    argument: str

    def violation(self, value: Any) -> str | None:
        """Why `value` is not a single read-only statement, or `None`."""
        if not isinstance(value, str) or not value.strip():
            return f"{self.argument!r} must be a non-empty SQL string"
        if len(value) > 100_000:
            return f"{self.argument!r} SQL is longer than 100000 characters"
        sql = _SQL_LITERAL.sub(" '' ", value)
        sql = _SQL_COMMENT.sub(" ", sql).strip().rstrip(";").strip().lower()
        if ";" in sql:
            return f"{self.argument!r} holds more than one SQL statement"
        words = sql.split(None, 1)
        if not words or words[0].lstrip("(") not in _SQL_READ_START:
            return f"{self.argument!r} is not a read-only query (starts with {words[0] if words else ''!r})"
        write = _SQL_WRITE.search(sql)
        if write is not None:
            return f"{self.argument!r} contains the write keyword {write.group().upper()!r}"
        return None


@dataclass(frozen=True, kw_only=True, slots=True)
class AmountLimit:
    """The argument is a number between `minimum` and `maximum` (numbers in strings are accepted).

    Attributes:
        argument: the argument holding the amount.
        maximum: the largest allowed value.
        minimum: the smallest allowed value (0 by default: negative amounts reverse a payment).
    """

    argument: str
    maximum: float | Decimal
    minimum: float | Decimal = 0

    def violation(self, value: Any) -> str | None:
        """Why `value` is not an amount within the limits, or `None`."""
        if isinstance(value, bool):
            return f"{self.argument!r} must be a number, got a boolean"
        try:
            amount = (
                Decimal(str(value).replace(",", "").strip()) if isinstance(value, str) else Decimal(value)
            )
        except (InvalidOperation, TypeError, ValueError):
            return f"{self.argument!r} must be a number, got {value!r:.60}"
        if not amount.is_finite():
            return f"{self.argument!r} must be finite, got {value!r:.60}"
        if amount > Decimal(str(self.maximum)):
            return f"{self.argument!r} is {amount}, over the limit {self.maximum}"
        if amount < Decimal(str(self.minimum)):
            return f"{self.argument!r} is {amount}, under the minimum {self.minimum}"
        return None


@dataclass(frozen=True, kw_only=True, slots=True)
class DomainAllowlist:
    """The argument is a URL or email address whose host is in `hosts` (subdomains included).

    Attributes:
        argument: the argument holding the URL or address.
        hosts: allowed hosts.
    """

    argument: str
    hosts: Sequence[str]

    def violation(self, value: Any) -> str | None:
        """Why `value` points outside `hosts`, or `None`."""
        from ._output import _host_of

        if not isinstance(value, str) or not value.strip():
            return f"{self.argument!r} must be a URL or email address"
        value = value.strip()
        if "://" not in value and "@" in value and "/" not in value:
            host: str | None = value.rsplit("@", 1)[1]
        else:
            # urlsplit puts "user@" into userinfo, so "https://good.com@evil.com" resolves to evil.com
            host = _host_of(value)
        if not host or not host_allowed(host, self.hosts):
            return f"{self.argument!r} host {host!r} is not in the allowed hosts {list(self.hosts)}"
        return None


class ToolScopeGuard:
    """The tool is one this agent may call.

    Args:
        allowed_tools: tool names in the agent's scope.
        action: what to ask for when the model calls any other tool.
        name: the guard's name in verdicts.
    """

    def __init__(self, allowed_tools: Collection[str], *, action: Action = "block", name: str = "tool_scope"):
        self._name = name
        self.allowed_tools = frozenset(allowed_tools)
        self.action = check_action(action, name)

    @property
    def name(self) -> str:
        """The guard's name in verdicts."""
        return self._name

    @property
    def stages(self) -> frozenset[Stage]:
        """Tool calls only."""
        return frozenset(("tool_call",))

    def check(self, subject: str | ToolCallCheck, context: GuardContext) -> list[Verdict]:
        """Check that `subject` calls a tool in scope.

        Args:
            subject: the proposed tool call.
            context: where and from whom.

        Returns:
            A `tool_scope` verdict when the tool is out of scope.
        """
        if not isinstance(subject, ToolCallCheck) or subject.tool_name in self.allowed_tools:
            return []
        in_scope = sorted(self.allowed_tools)[:50]
        return [
            Verdict(
                guard=self.name,
                category="tool_scope",
                action=self.action,
                score=1.0,
                message=f"tool {subject.tool_name!r} is not in this agent's scope: {in_scope}",
            )
        ]


class ToolArgumentsGuard:
    """Per-tool argument constraints, plus bounds on the size and depth of any tool's arguments.

    Args:
        constraints: tool name -> constraints on its arguments.
        max_depth: deepest nesting of objects and lists allowed in any call's arguments.
        max_items: most values (strings, numbers, containers) allowed in any call's arguments.
        required: a constrained argument that is absent is a violation (on by default: fail closed).
        action: what to ask for on a violation.
        name: the guard's name in verdicts.
    """

    def __init__(
        self,
        constraints: Mapping[str, Iterable[ArgumentConstraint]] | None = None,
        *,
        max_depth: int = 32,
        max_items: int = 100_000,
        required: bool = True,
        action: Action = "block",
        name: str = "tool_args",
    ):
        self._name = name
        self.constraints = {tool: tuple(cs) for tool, cs in (constraints or {}).items()}
        if max_depth < 1 or max_items < 1:
            raise ConfigError(f"guard {name!r}: max_depth and max_items must be positive")
        self.max_depth = max_depth
        self.max_items = max_items
        self.required = required
        self.action = check_action(action, name)

    @property
    def name(self) -> str:
        """The guard's name in verdicts."""
        return self._name

    @property
    def stages(self) -> frozenset[Stage]:
        """Tool calls only."""
        return frozenset(("tool_call",))

    def check(self, subject: str | ToolCallCheck, context: GuardContext) -> list[Verdict]:
        """Check the arguments of `subject`.

        Args:
            subject: the proposed tool call.
            context: where and from whom.

        Returns:
            One `tool_args` verdict listing every violation, or none.
        """
        if not isinstance(subject, ToolCallCheck):
            return []
        problems: list[str] = []
        shape = self._shape_problem(subject.arguments)
        if shape is not None:
            problems.append(shape)
        else:
            for constraint in self.constraints.get(subject.tool_name, ()):
                value = _lookup(subject.arguments, constraint.argument)
                if value is _MISSING:
                    if self.required:
                        problems.append(f"{constraint.argument!r} is missing")
                    continue
                problem = constraint.violation(value)
                if problem is not None:
                    problems.append(problem)
        if not problems:
            return []
        return [
            Verdict(
                guard=self.name,
                category="tool_args",
                action=self.action,
                score=1.0,
                spans=tuple(Span(start=0, end=0, excerpt=p[:80], label="argument") for p in problems),
                message=f"tool {subject.tool_name!r}: " + "; ".join(problems),
            )
        ]

    def _shape_problem(self, arguments: Any) -> str | None:
        # iterative walk: a 100k-deep JSON must not hit Python's recursion limit inside the guard
        stack: list[tuple[Any, int]] = [(arguments, 1)]
        seen = 0
        while stack:
            value, depth = stack.pop()
            seen += 1
            if seen > self.max_items:
                return f"arguments hold more than {self.max_items} values"
            if isinstance(value, Mapping):
                if depth > self.max_depth:
                    return f"arguments are nested deeper than {self.max_depth} levels"
                stack.extend((v, depth + 1) for v in value.values())
            elif isinstance(value, list | tuple):
                if depth > self.max_depth:
                    return f"arguments are nested deeper than {self.max_depth} levels"
                stack.extend((v, depth + 1) for v in value)
        return None


def _lookup(arguments: Mapping[str, Any], path: str) -> Any:
    value: Any = arguments
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value
