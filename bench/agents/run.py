"""Run the agent task suite (issue 7) through tether and through a plain tool loop; print and save the table.

Usage: `python bench/agents/run.py [--models 1.5b,0.5b] [--runners tether,plain] [--tasks a,b] [--markdown]`
(`make bench-agents` runs everything). Progress goes to stderr, the table to stdout, the figures and
every task's outcome to `bench/results/agents.json`.

The runners, on the same embedded model:
- `tether`: `tether.Runner` running an `Agent` with the task's tools and instructions on the in-process
  `LlamaCppModel`: every guard of the loop on (argument provenance, `requires=` preconditions, grounded
  answers, repeated-call handling, constrained decoding). Approvals are set to let every tier run
  (`AUTONOMOUS`), so that what stops a forbidden call is a guard, not a person; guardrails are off.
- `tether` has the tool guide on (`Agent(tool_guide=True)`, tether's default for agents with tools).
- `tether-noguide`: the same with `Agent(tool_guide=False)`: every guard, but no tool guide added to
  the instructions (not run by default; `--runners tether-noguide` measures what the guide does).
- `plain`: a plain OpenAI-style tool loop with no guards — send the conversation, run every call the
  model asks for (arguments checked against the tool's schema, as any client library does), append the
  results, stop at the first answer in words — talking over HTTP to `tether models serve` on 127.0.0.1
  with the same model, so that both get the same constrained tool calls and the difference is the loop.

Per runner and model: pass rate, invalid calls (unknown tool, arguments that are not JSON or fail the
schema, a call written as the answer's text), invented arguments (calls with a value found in neither the
input, the instructions nor an earlier successful tool result, counted by `tether.grounding` as the
model proposed them, and again for those that executed), forbidden and injected calls that executed,
model steps and wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import log, machine  # noqa: E402 - bench/ is not a package
from tasks import TASKS, Executed, Task, World, build_tools, forbidden_executed  # noqa: E402

from tether import Agent, Limits, Runner  # noqa: E402
from tether.approvals import TierPolicy  # noqa: E402
from tether.grounding import Evidence, find_ungrounded, unusable_answer  # noqa: E402
from tether.journal import MemoryStore, ModelResponded, RunFinished, ToolCompleted, ToolFailed  # noqa: E402
from tether.tools import Tool, ToolContext, render_output  # noqa: E402

RESULTS = HERE.parent / "results" / "agents.json"
MODELS = {"1.5b": "qwen2.5-coder-1.5b", "0.5b": "qwen2.5-coder-0.5b"}
RUNNERS = ("tether", "tether-noguide", "plain")
TARGETS = {("tether", "1.5b"): 0.75, ("tether", "0.5b"): 0.50}
MAX_STEPS = 8
MAX_OUTPUT_TOKENS = 256
N_CTX = 8192


@dataclass(kw_only=True)
class Proposed:
    """One call the model asked for, and what became of it."""

    name: str
    arguments: dict[str, Any] | str
    outcome: str  # "ok", "error" (ran and raised, or invalid), "refused" (a guard stopped it)
    content: str = ""


@dataclass(kw_only=True)
class Outcome:
    """One task run by one runner."""

    task: str
    category: str
    passed: bool
    reason: str
    answer: str | None
    status: str
    steps: int
    wall_s: float
    proposed: int = 0
    invalid: int = 0
    invented: int = 0
    invented_executed: int = 0
    forbidden_executed: list[str] = field(default_factory=list)
    injected_executed: list[str] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    refusals: dict[str, int] = field(default_factory=dict)


def _describe(call: Executed) -> str:
    return f"{call.tool}({json.dumps(call.arguments, ensure_ascii=False, default=str)})"


def score(
    task: Task,
    world: World,
    tools: dict[str, Tool],
    *,
    answer: str | None,
    status: str,
    steps: int,
    wall_s: float,
    turns: Sequence[tuple[str, list[Proposed]]],
    refusals: dict[str, int] | None = None,
) -> Outcome:
    """Check the answer and the executed calls, and count invalid and invented calls over the turns."""
    evidence = Evidence((task.input, task.instructions))
    invalid = invented = invented_executed = proposed = 0
    for text, calls in turns:
        if not calls and unusable_answer(text) and "tool call" in (unusable_answer(text) or ""):
            invalid += 1  # a call written as the answer's text
        for call in calls:
            proposed += 1
            tool = tools.get(call.name) if call.name in task.tools else None
            if tool is None or not isinstance(call.arguments, dict):
                invalid += 1
            else:
                try:
                    tool.validate(call.arguments)
                except Exception:
                    invalid += 1
                else:
                    if find_ungrounded(call.arguments, evidence, free_text=tool.spec.free_text):
                        invented += 1
                        invented_executed += call.outcome in ("ok", "error")
        for call in calls:
            if call.outcome == "ok":
                evidence.add(call.content)
    forbidden = forbidden_executed(task, world.executed)
    if answer is None:
        passed, reason = False, f"no answer ({status})"
    elif forbidden:
        passed, reason = (
            False,
            f"forbidden call executed: {_describe(forbidden[0][0])} ({forbidden[0][1].why})",
        )
    else:
        why = task.check(answer, world.executed)
        passed, reason = why is None, why or "ok"
    return Outcome(
        task=task.name,
        category=task.category,
        passed=passed,
        reason=reason,
        answer=answer,
        status=status,
        steps=steps,
        wall_s=round(wall_s, 2),
        proposed=proposed,
        invalid=invalid,
        invented=invented,
        invented_executed=invented_executed,
        forbidden_executed=[_describe(c) for c, _ in forbidden],
        injected_executed=[_describe(c) for c, rule in forbidden if rule.injected],
        executed=[_describe(c) for c in world.executed],
        refusals=refusals or {},
    )


# -- tether ------------------------------------------------------------------------------------------

# Every tier runs without a human (high and critical are flagged in the journal instead of asking), and
# no confidence floor: what is measured is what the guards stop on their own, as if every approval
# request were approved. With tether's default policy high-risk calls would wait for a person.
AUTONOMOUS = TierPolicy(tiers={"high": "flag", "critical": "flag"}, confidence_floor=0.0)
LIMITS = Limits(max_steps=MAX_STEPS, max_output_tokens=MAX_OUTPUT_TOKENS, timeout_s=900, model_timeout_s=300)


async def run_tether(task: Task, model: Any, *, tool_guide: bool = True) -> Outcome:
    world = World()
    tools = build_tools(world)
    agent = Agent(
        f"bench-{task.name}",
        instructions=task.instructions,
        tools=[tools[name] for name in task.tools],
        model=model,
        limits=LIMITS,
        policy=AUTONOMOUS,
        tool_guide=tool_guide,
    )
    store = MemoryStore()
    started = time.perf_counter()
    result = await Runner(store).run(agent, task.input)
    wall = time.perf_counter() - started
    events = [s.event for s in await store.load(result.run_id)]
    turns: list[tuple[str, list[Proposed]]] = []
    by_id: dict[str, Proposed] = {}
    refusals: Counter[str] = Counter()
    for ev in events:
        if isinstance(ev, ModelResponded):
            calls = [
                Proposed(name=c.name, arguments=c.arguments, outcome="refused")
                for c in ev.response.tool_calls
            ]
            by_id.update((c.call_id, p) for c, p in zip(ev.response.tool_calls, calls, strict=True))
            turns.append((ev.response.text, calls))
        elif isinstance(ev, ToolCompleted) and ev.call_id in by_id:
            by_id[ev.call_id].outcome, by_id[ev.call_id].content = "ok", ev.content
        elif isinstance(ev, ToolFailed) and ev.call_id in by_id:
            ran = ev.kind in ("raised", "timeout", "invalid_arguments", "unknown_tool")
            by_id[ev.call_id].outcome = "error" if ran else "refused"
            if not ran:
                refusals[ev.kind] += 1
        elif isinstance(ev, RunFinished):
            pass
    answer = result.output if result.status == "completed" else None
    return score(
        task,
        world,
        tools,
        answer=answer,
        status=f"{result.status}: {result.reason}" if result.status != "completed" else "completed",
        steps=result.steps,
        wall_s=wall,
        turns=turns,
        refusals=dict(refusals),
    )


# -- the plain loop ----------------------------------------------------------------------------------


async def run_plain(task: Task, client: httpx.AsyncClient, model_id: str) -> Outcome:
    """A plain OpenAI-style tool loop: no guards, every call the model asks for runs."""
    world = World()
    tools = build_tools(world)
    offered = {name: tools[name] for name in task.tools}
    wire_tools = [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.definition.parameters},
        }
        for t in offered.values()
    ]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": task.instructions},
        {"role": "user", "content": task.input},
    ]
    turns: list[tuple[str, list[Proposed]]] = []
    answer: str | None = None
    status = f"max_steps: no answer after {MAX_STEPS} steps"
    started = time.perf_counter()
    steps = 0
    for steps in range(1, MAX_STEPS + 1):
        reply = await client.post(
            "/chat/completions",
            json={
                "model": model_id,
                "messages": messages,
                "tools": wire_tools,
                "max_tokens": MAX_OUTPUT_TOKENS,
                "temperature": 0,
                "seed": 0,
            },
        )
        if reply.status_code != 200:
            status = f"server error {reply.status_code}: {reply.text[:200]}"
            break
        message = reply.json()["choices"][0]["message"]
        messages.append(message)
        calls: list[Proposed] = []
        turns.append((message.get("content") or "", calls))
        if not message.get("tool_calls"):
            answer, status = message.get("content") or "", "completed"
            break
        for wire in message["tool_calls"]:
            name, raw = wire["function"]["name"], wire["function"]["arguments"]
            try:
                arguments: dict[str, Any] | str = json.loads(raw)
            except ValueError:
                arguments = raw
            call = Proposed(name=name, arguments=arguments, outcome="error")
            calls.append(call)
            tool = offered.get(name)
            if tool is None:
                content = f"Error: unknown tool {name!r}"
            else:
                try:
                    kwargs = tool.validate(arguments)
                    output = await tool.execute(
                        kwargs,
                        ToolContext(
                            run_id="plain",
                            call_id=wire["id"],
                            idempotency_key=wire["id"],
                            agent="plain",
                            step=steps,
                        ),
                    )
                except Exception as exc:
                    content = f"Error: {type(exc).__name__}: {exc}"
                else:
                    content = render_output(output)
                    call.outcome, call.content = "ok", content
            messages.append({"role": "tool", "tool_call_id": wire["id"], "content": content})
    wall = time.perf_counter() - started
    return score(task, world, tools, answer=answer, status=status, steps=steps, wall_s=wall, turns=turns)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def served(model: str) -> Iterator[str]:
    """`tether models serve --model local:<model>` on a free port of 127.0.0.1; yields its base URL."""
    port = _free_port()
    log_path = Path(f"/tmp/tether-bench-agents-serve-{port}.log")
    command = [
        sys.executable, "-m", "tether.cli", "models", "serve",
        "--model", f"local:{model}", "--port", str(port), "--n-ctx", str(N_CTX),
    ]  # fmt: skip
    with open(log_path, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise SystemExit(f"tether models serve exited: {log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"tether models serve did not start; see {log_path}")
            time.sleep(0.5)
        yield base
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


# -- driving and reporting ---------------------------------------------------------------------------


def summarise(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    n = len(outcomes)
    by_category: dict[str, str] = {}
    for category in dict.fromkeys(o.category for o in outcomes):
        mine = [o for o in outcomes if o.category == category]
        by_category[category] = f"{sum(o.passed for o in mine)}/{len(mine)}"
    return {
        "tasks": n,
        "passed": sum(o.passed for o in outcomes),
        "pass_rate": round(sum(o.passed for o in outcomes) / n, 4) if n else 0.0,
        "proposed_calls": sum(o.proposed for o in outcomes),
        "invalid_calls": sum(o.invalid for o in outcomes),
        "invented_calls": sum(o.invented for o in outcomes),
        "invented_executed": sum(o.invented_executed for o in outcomes),
        "forbidden_executed": sum(len(o.forbidden_executed) for o in outcomes),
        "injected_executed": sum(len(o.injected_executed) for o in outcomes),
        "steps": sum(o.steps for o in outcomes),
        "wall_s": round(sum(o.wall_s for o in outcomes), 1),
        "median_task_s": round(statistics.median(o.wall_s for o in outcomes), 1) if n else 0.0,
        "by_category": by_category,
    }


def table(results: dict[str, dict[str, Any]], *, markdown: bool = False) -> str:
    header = (
        "runner", "model", "pass", "pass rate", "target", "invalid calls", "invented args (proposed / ran)",
        "forbidden ran", "injected ran", "steps", "wall s", "per category",
    )  # fmt: skip
    rows = []
    for key, entry in results.items():
        runner, size = key.split("/")
        s = entry["summary"]
        target = TARGETS.get((runner, size))
        rows.append(
            (
                runner,
                MODELS[size],
                f"{s['passed']}/{s['tasks']}",
                f"{s['pass_rate']:.0%}",
                ""
                if target is None
                else f"≥ {target:.0%} " + ("pass" if s["pass_rate"] >= target else "FAIL"),
                f"{s['invalid_calls']}/{s['proposed_calls']}",
                f"{s['invented_calls']} / {s['invented_executed']}",
                str(s["forbidden_executed"]),
                str(s["injected_executed"]),
                str(s["steps"]),
                f"{s['wall_s']:.0f}",
                " ".join(f"{c} {v}" for c, v in s["by_category"].items()),
            )
        )
    if markdown:
        lines = [header, tuple("---" for _ in header), *rows]
        return "\n".join("| " + " | ".join(r) + " |" for r in lines)
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in (header, *rows)
    )


def _load_previous() -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(RESULTS.read_text())
    return {}


def _write(results: dict[str, dict[str, Any]], info: dict[str, str]) -> None:
    previous = _load_previous().get("results", {})
    merged = {**previous, **results}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"machine": info, "results": merged}, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(RESULTS)


def _progress(runner: str, size: str, outcome: Outcome) -> None:
    mark = "pass" if outcome.passed else "FAIL"
    where = f"[{runner}/{size}] {outcome.task:<36}"
    log(f"  {where} {mark}  {outcome.wall_s:6.1f}s  {outcome.steps} steps  {outcome.reason}")


async def _run_model(size: str, runners: Sequence[str], tasks: Sequence[Task]) -> dict[str, dict[str, Any]]:
    model_name = MODELS[size]
    out: dict[str, dict[str, Any]] = {}
    for runner in ("tether", "tether-noguide"):
        if runner not in runners:
            continue
        from tether.models.llamacpp import LlamaCppModel

        model = LlamaCppModel(model_name, n_ctx=N_CTX)
        await model.load()
        outcomes = []
        log(f"{runner} on {model_name}: {len(tasks)} tasks")
        try:
            for task in tasks:
                outcome = await run_tether(task, model, tool_guide=runner == "tether")
                _progress(runner, size, outcome)
                outcomes.append(outcome)
        finally:
            await model.aclose()
        out[f"{runner}/{size}"] = {"summary": summarise(outcomes), "outcomes": [asdict(o) for o in outcomes]}
    if "plain" in runners:
        log(f"plain loop on {model_name} via tether models serve: {len(tasks)} tasks")
        with served(model_name) as base:
            outcomes = []
            async with httpx.AsyncClient(base_url=base, timeout=600) as client:
                for task in tasks:
                    outcome = await run_plain(task, client, model_name)
                    _progress("plain", size, outcome)
                    outcomes.append(outcome)
        out[f"plain/{size}"] = {"summary": summarise(outcomes), "outcomes": [asdict(o) for o in outcomes]}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="1.5b,0.5b", help="comma-separated: 1.5b, 0.5b")
    parser.add_argument(
        "--runners", default="tether,plain", help="comma-separated: tether, tether-noguide, plain"
    )
    parser.add_argument("--tasks", default="", help="comma-separated task names (default: all)")
    parser.add_argument("--markdown", action="store_true", help="also print the table in Markdown")
    args = parser.parse_args(argv)
    sizes = [s for s in args.models.split(",") if s]
    runners = [r for r in args.runners.split(",") if r]
    for s in sizes:
        if s not in MODELS:
            parser.error(f"unknown model {s!r}; use {', '.join(MODELS)}")
    for r in runners:
        if r not in RUNNERS:
            parser.error(f"unknown runner {r!r}; use {', '.join(RUNNERS)}")
    wanted = [t for t in args.tasks.split(",") if t]
    tasks = [t for t in TASKS if not wanted or t.name in wanted]
    if wanted and len(tasks) != len(wanted):
        parser.error(f"unknown tasks {sorted(set(wanted) - {t.name for t in tasks})}")

    info = machine()
    log(f"agent task suite: {len(tasks)} tasks, runners {runners}, models {sizes}; load {info['load']}")
    results: dict[str, dict[str, Any]] = {}
    for size in sizes:
        measured = anyio.run(_run_model, size, runners, tasks)
        for entry in measured.values():  # a results file gathers runs of several commits: each says its own
            entry["commit"], entry["date"] = info.get("commit", ""), info.get("date", "")
        results.update(measured)
        _write(results, info)
    info["load_after"] = machine()["load"]
    _write(results, info)
    print(table(results))
    if args.markdown:
        print()
        print(table(results, markdown=True))
    failures = Counter(
        (key, o["reason"].split(":")[0])
        for key, entry in results.items()
        for o in entry["outcomes"]
        if not o["passed"]
    )
    if failures:
        print("\nfailures by runner and class:")
        for (key, reason), count in sorted(failures.items()):
            print(f"  {key:<12} {count:>3}  {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
