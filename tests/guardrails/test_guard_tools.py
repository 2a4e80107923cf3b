"""Tool-call guards: scope, paths, read-only SQL, amounts, domains, and the shape of the arguments."""
# ruff: noqa: RUF001, RUF003  (look-alike characters are what these tests are about)

from __future__ import annotations

import pytest

from tether.guardrails import (
    AmountLimit,
    DomainAllowlist,
    GuardContext,
    PathAllowlist,
    ReadOnlySQL,
    ToolArgumentsGuard,
    ToolCallCheck,
    ToolScopeGuard,
)

CTX = GuardContext(stage="tool_call")


def call(tool: str, **arguments: object) -> ToolCallCheck:
    return ToolCallCheck(tool_name=tool, arguments=arguments)


def test_scope() -> None:
    guard = ToolScopeGuard({"search", "read_file"})
    assert guard.check(call("search", q="x"), CTX) == []
    verdict = guard.check(call("delete_repo"), CTX)[0]
    assert verdict.action == "block" and "delete_repo" in verdict.message


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("/srv/data/report.csv", True),
        ("reports/q1.csv", True),
        ("/srv/data/../../etc/passwd", False),
        ("../secrets.txt", False),
        ("/etc/shadow", False),
        ("/srv/database/x", False),
        ("/srv/data/ok\x00.txt", False),
        ("..\\..\\windows\\system32", False),
    ],
)
def test_path_allowlist(path: str, ok: bool) -> None:
    assert (PathAllowlist(argument="path", roots=["/srv/data"]).violation(path) is None) is ok


@pytest.mark.parametrize(
    ("sql", "ok"),
    [
        ("SELECT * FROM orders WHERE id = 7", True),
        ("with t as (select 1) select * from t", True),
        ("SELECT 'drop table x' AS note", True),
        ("SELECT replace(name, 'a', 'b') FROM users", True),
        ("DELETE FROM orders", False),
        ("SELECT 1; DROP TABLE orders", False),
        ("SELECT * INTO backup FROM orders", False),
        ("/* harmless */ UPDATE users SET admin = 1", False),
        ("SELECT pg_read_file('/etc/passwd')", False),
        ("", False),
    ],
)
def test_read_only_sql(sql: str, ok: bool) -> None:
    assert (ReadOnlySQL(argument="sql").violation(sql) is None) is ok


@pytest.mark.parametrize(
    ("amount", "ok"),
    [
        (10, True),
        ("99.99", True),
        ("1,000", False),
        (100.01, False),
        (-5, False),
        ("NaN", False),
        (True, False),
        ("ten", False),
    ],
)
def test_amount_limit(amount: object, ok: bool) -> None:
    assert (AmountLimit(argument="amount", maximum=100).violation(amount) is None) is ok


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://api.example.com/v1", True),
        ("bob@example.com", True),
        ("https://example.com.evil.test/", False),
        ("https://example.com@evil.test/", False),
        ("https://evil.test/?next=example.com", False),
        ("https://еxample.com/", False),  # Cyrillic е
    ],
)
def test_domain_allowlist(url: str, ok: bool) -> None:
    assert (DomainAllowlist(argument="url", hosts=["example.com"]).violation(url) is None) is ok


def test_arguments_guard_collects_violations_and_missing_arguments() -> None:
    guard = ToolArgumentsGuard(
        {
            "pay": [
                AmountLimit(argument="payment.amount", maximum=50),
                DomainAllowlist(argument="notify", hosts=["acme.io"]),
            ]
        }
    )
    assert guard.check(call("pay", payment={"amount": 20}, notify="ops@acme.io"), CTX) == []
    verdict = guard.check(call("pay", payment={"amount": 500}), CTX)[0]
    assert "over the limit 50" in verdict.message and "'notify' is missing" in verdict.message
    assert guard.check(call("other_tool", anything=1), CTX) == []


def test_deeply_nested_and_huge_arguments_are_refused() -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(10_000):
        child: dict[str, object] = {}
        node["a"] = child
        node = child
    guard = ToolArgumentsGuard(max_depth=32, max_items=1000)
    assert "nested deeper" in guard.check(ToolCallCheck(tool_name="t", arguments=deep), CTX)[0].message
    wide = {"items": list(range(5000))}
    assert "more than 1000" in guard.check(ToolCallCheck(tool_name="t", arguments=wide), CTX)[0].message
