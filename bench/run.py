"""Run tether's benchmarks, print one table, write `bench/results/latest.json`.

Usage: `python bench/run.py [--markdown] [MODULE ...]` (`make bench` runs them all; `--markdown` also
prints the table in Markdown, for `bench/README.md`).

Each benchmark is a module beside this file exposing `main() -> list[dict]` (figures made with
`_common.figure`). A module whose optional dependency is missing is skipped with the reason printed:
it raises `_common.Skip`, or fails to import a third-party package. Any other error is a failure.
Figure names are written as `<module>.<name>`.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from _common import Skip, format_table, log, machine, skipped, write_results

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "latest.json"

MODULES: tuple[str, ...] = ("core", "workers", "journal", "models", "routing")
"""The benchmark modules `make bench` runs, in order (`bench/<name>.py`)."""

_OWN_PACKAGES = {"tether", "_common", "_workers_agent", *MODULES}


def _load(name: str) -> ModuleType:
    """Import `bench/<name>.py` under a private name, so it cannot shadow a package of the same name."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", HERE / f"{name}.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"no benchmark module bench/{name}.py; known: {', '.join(MODULES)}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import would: dataclasses and pickling look modules up here
    spec.loader.exec_module(module)
    return module


def _run(name: str) -> list[dict[str, Any]]:
    """The module's figures, prefixed with its name; a skip record when a dependency is missing."""
    try:
        figures = _load(name).main()
    except Skip as exc:
        return [skipped(name, str(exc))]
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".", 1)[0] in _OWN_PACKAGES:
            raise  # tether or the benchmark itself is broken: not a missing optional dependency
        return [skipped(name, f"needs the package {exc.name!r}, which is not installed")]
    return [{**fig, "name": f"{name}.{fig['name']}"} for fig in figures]


def main(argv: list[str]) -> int:
    markdown = "--markdown" in argv
    names = [a for a in argv if a != "--markdown"] or list(MODULES)
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        print(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(MODULES)}", file=sys.stderr)
        return 2
    where = machine()
    figures: list[dict[str, Any]] = []
    started = time.perf_counter()
    for name in names:
        log(f"== {name}")
        figures += _run(name)
    print(
        f"tether benchmarks — {where['date']} — {where['cpus']} CPUs ({where['cpu']}), "
        f"Python {where['python']}, commit {where['commit'] or '?'}, load average {where['load']}"
    )
    print()
    print(format_table(figures))
    if markdown:
        print()
        print(format_table(figures, markdown=True))
    write_results(RESULTS, figures, names)
    print()
    elapsed = time.perf_counter() - started
    measured = sum("skipped" not in f for f in figures)
    print(
        f"{measured} figures, {len(figures) - measured} skipped, in {elapsed:.0f}s "
        f"(load average now {machine()['load']}); written to {RESULTS.relative_to(HERE.parent)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
