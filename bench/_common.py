"""What every benchmark module shares: the figure record, timing hygiene, the table and the JSON file.

A benchmark module exposes `main() -> list[dict]`; each dict is one figure made by `figure()` (or a
`skipped()` record for a part that could not run here). `bench/run.py` prints them all in one table and
writes them to `bench/results/latest.json`.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import platform
import pstats
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import cProfile

__all__ = [
    "Skip",
    "figure",
    "format_table",
    "interleaved_samples",
    "log",
    "machine",
    "median",
    "print_profile",
    "quiet_gc",
    "skipped",
    "write_results",
]


class Skip(Exception):
    """Raised by a benchmark's `main()` when an optional dependency it needs is missing.

    The message is the reason, and says how to install what is missing.
    """


def figure(
    name: str,
    value: float,
    unit: str,
    *,
    ratio: float | None = None,
    target: str = "",
    ok: bool | None = None,
    scale: str = "",
    note: str = "",
) -> dict[str, Any]:
    """One measured figure.

    Args:
        name: dotted and stable (`step_us.memory`); the driver prefixes the module's name.
        value: the measurement.
        unit: `µs/step`, `runs/s`, `B/run`...
        ratio: to a baseline measured in the same run (the plain loop, direct llama-cpp-python); `None`
            when the figure has no baseline.
        target: the issue's target in words (`≤ 25x`), shown in the table.
        ok: whether the target is met (`None`: no target).
        scale: figures of other frameworks to compare with, shown in the table.
        note: one line on what exactly was measured, printed under the table.
    """
    return {
        "name": name,
        "value": value,
        "unit": unit,
        "ratio": ratio,
        "target": target,
        "ok": ok,
        "scale": scale,
        "note": note,
    }


def skipped(name: str, reason: str) -> dict[str, Any]:
    """A figure that could not be measured here, with the reason (printed, never written as a value)."""
    return {"name": name, "skipped": reason}


def median(values: Iterable[float]) -> float:
    """The median (the figures here are medians of repetitions: robust to a noisy shared machine)."""
    return statistics.median(list(values))


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """Collect garbage, then keep the collector off while timing (as `timeit` does).

    A collection that happens to land in one timed batch and not another is noise, not a property of
    the code; what the code allocates still costs its allocation time.
    """
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_Variant = TypeVar("_Variant")


async def interleaved_samples(
    variants: Mapping[str, _Variant],
    seconds_per: Callable[[_Variant, int], Awaitable[float]],
    *,
    rounds: int,
    batch_s: float,
    min_batch: int,
    scale: float,
    label: str,
) -> dict[str, list[float]]:
    """One sample per round of each variant: its seconds per call, times `scale`.

    `seconds_per(variant, n)` times `n` calls. Each variant is warmed up, then timed in batches of
    about `batch_s` (at least `min_batch` calls); the variants take turns first from round to round, so
    that drift of the machine hits all of them alike and their ratios can be read round by round.
    `label` names the measurement in the progress log.
    """
    batch: dict[str, int] = {}
    for name, variant in variants.items():
        await seconds_per(variant, 20)  # warm up: statements prepared, caches filled
        batch[name] = max(min_batch, math.ceil(batch_s / await seconds_per(variant, 20)))
    log(f"   {label}: {rounds} rounds, calls per batch {batch}")
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            samples[name].append(await seconds_per(variants[name], batch[name]) * scale)
    return samples


def machine() -> dict[str, str]:
    """Where and when the figures were taken: date (UTC), CPUs, CPU model, Python, git commit."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = ""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    load = ""
    with contextlib.suppress(OSError):
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": str(os.cpu_count() or "?"),
        "cpu": cpu,
        "python": platform.python_version(),
        "commit": commit,
        "load": load,
    }


def _format_value(value: float) -> str:
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_table(figures: Sequence[dict[str, Any]], *, markdown: bool = False) -> str:
    """The figures as an aligned text table (or a Markdown one), skipped parts and notes below it."""
    header = ("figure", "value", "unit", "ratio", "target", "result", "for scale")
    rows: list[tuple[str, ...]] = []
    below: list[str] = []
    for fig in figures:
        if "skipped" in fig:
            rows.append((fig["name"], "—", "", "", "", "skipped", ""))
            below.append(f"{fig['name']}: skipped: {fig['skipped']}")
            continue
        ratio = fig.get("ratio")
        ok = fig.get("ok")
        rows.append(
            (
                fig["name"],
                _format_value(fig["value"]),
                fig["unit"],
                "" if ratio is None else f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.1f}x",
                fig.get("target", ""),
                "" if ok is None else "pass" if ok else "FAIL",
                fig.get("scale", ""),
            )
        )
        if fig.get("note"):
            below.append(f"{fig['name']}: {fig['note']}")
    if markdown:
        table = [header, ("---", "---:", "---", "---:", "---", "---", "---"), *rows]
        out = ["| " + " | ".join(row) + " |" for row in table]
        return "\n".join(out + ([""] + [f"- {b}" for b in below] if below else []))
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    right = {1, 3}  # numbers line up on the right

    def line(row: Sequence[str]) -> str:
        cells = (
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        return "  ".join(cells).rstrip()

    out = [line(header), line(tuple("-" * w for w in widths)), *(line(row) for row in rows)]
    if below:
        out += ["", *below]
    return "\n".join(out)


def _round(value: float | None) -> float | None:
    # six significant digits: more would only record the noise
    return None if value is None else float(f"{value:.6g}")


def write_results(path: Path, figures: Sequence[dict[str, Any]], ran: Sequence[str]) -> list[dict[str, Any]]:
    """Write the figures as JSON (`[{name, value, unit, ratio}, ...]`) and return what was written.

    Figures already in the file from modules that did not run this time (`bench/run.py core` runs one)
    are kept; those of modules that ran, or were meant to run and were skipped, are replaced, so the
    file never holds a stale figure next to a fresh one from the same module.
    """
    kept: list[dict[str, Any]] = []
    with contextlib.suppress(OSError, ValueError):
        previous = json.loads(path.read_text())
        kept = [f for f in previous if f.get("name", "").split(".", 1)[0] not in ran]
    fresh = [
        {"name": f["name"], "value": _round(f["value"]), "unit": f["unit"], "ratio": _round(f.get("ratio"))}
        for f in figures
        if "skipped" not in f
    ]
    merged = fresh + kept
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(merged, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return merged


def print_profile(
    profiler: cProfile.Profile, *, steps: int, heading: str, top: int, callees_in: Sequence[str] = ()
) -> None:
    """Print where a profiled workload's time goes per step: by self time, then including callees.

    Args:
        profiler: the profile, taken over `steps` steps.
        steps: what the times are divided by.
        heading: what ran (the first line says it and the time per step).
        top: how many functions each ranking lists.
        callees_in: when given, the ranking including callees lists only functions whose file path holds
            one of these (tether's own, say, not the event loop's frames that include everything).
    """
    rows: dict[tuple[str, int, str], tuple[int, int, float, float, Any]]
    rows = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(tottime for _, _, tottime, _, _ in rows.values())
    print(f"{heading}, {total / steps * 1e6:.0f} µs/step under the profiler\n")
    for title, column in (("self time", 2), ("including callees", 3)):
        print(f"{'µs/step':>8}  {'share':>6}  {'calls/step':>10}  {title}")
        ranked = sorted(rows.items(), key=lambda item: item[1][column], reverse=True)
        if column == 3 and callees_in:
            ranked = [(key, value) for key, value in ranked if any(part in key[0] for part in callees_in)]
        for key, value in ranked[:top]:
            print(
                f"{value[column] / steps * 1e6:8.1f}  {value[column] / total:6.1%}  "
                f"{value[1] / steps:10.2f}  {_where(key)}"
            )
        print()


def _where(key: tuple[str, int, str]) -> str:
    path, line, func = key
    path = re.sub(r".*/(site-packages|lib/python3\.\d+|src)/", "", path)
    return f"{func} ({path}:{line})" if line else func


def log(message: str) -> None:
    """Progress on stderr, so that stdout holds only the table."""
    print(message, file=sys.stderr, flush=True)
