"""Where ``dora demo``'s time goes: wall and CPU time per phase, and the total against the stated budget.

CPU time is this process's (all its threads) plus that of the child processes it waited for: on a machine
that other jobs share, wall time grows with their load, CPU time much less (see docs/demo.md, "Budget").
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field


def _now() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and its waited-for children)."""
    times = os.times()
    return time.perf_counter(), times.user + times.system + times.children_user + times.children_system


@dataclass
class Clock:
    """Times the demo's phases; ``budget_s`` (None: none stated) is what the total is checked against."""

    budget_s: float | None
    started: tuple[float, float] = field(default_factory=lambda: _now())
    phases: list[dict] = field(default_factory=list)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Record the wall and CPU seconds of the ``with`` block under ``name``."""
        start = _now()
        try:
            yield
        finally:
            end = _now()
            self.phases.append({"phase": name, "wall_s": end[0] - start[0], "cpu_s": end[1] - start[1]})

    def total(self) -> dict:
        end = _now()
        return {"wall_s": end[0] - self.started[0], "cpu_s": end[1] - self.started[1]}

    def report(self) -> dict:
        """For results.json: the phases, the total, the budget and whether the total held it."""
        total = self.total()
        within = None if self.budget_s is None else total["wall_s"] <= self.budget_s
        return {**total, "budget_s": self.budget_s, "within_budget": within, "phases": self.phases}

    def format(self) -> str:
        """The phase table and the closing line: the elapsed time against the budget."""
        report = self.report()
        width = max([len(p["phase"]) for p in self.phases] + [len("total")])
        lines = [f"{'Time':<{width}}  {'wall':>8}  {'CPU':>8}"]
        lines += [f"{p['phase']:<{width}}  {_minutes(p['wall_s'])}  {_minutes(p['cpu_s'])}" for p in self.phases]
        lines.append(f"{'total':<{width}}  {_minutes(report['wall_s'])}  {_minutes(report['cpu_s'])}")
        lines.append(budget_line(report["wall_s"], report["cpu_s"], self.budget_s))
        return "\n".join(lines)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:6.1f} m"


def budget_line(wall_s: float, cpu_s: float, budget_s: float | None) -> str:
    """``Elapsed 9.8 min of the 15-minute budget (2 CPU cores): within it.`` or what to make of an overrun."""
    elapsed = f"Elapsed {wall_s / 60:.1f} min ({cpu_s / 60:.1f} min CPU)"
    if budget_s is None:
        return f"{elapsed}; no budget is stated for these settings (the default run's: see docs/demo.md)."
    budget = f"the {budget_s / 60:g}-minute budget (2 idle CPU cores)"
    if wall_s <= budget_s:
        return f"{elapsed}: within {budget}."
    cores = os.cpu_count() or 1
    return (
        f"{elapsed}: OVER {budget}. This machine has {cores} CPU core{'s' * (cores != 1)}; other jobs running "
        "on it slow every phase (compare wall and CPU above). --max_steps, --limit and --text_limit shorten the run."
    )


def choose_threads(requested: int | None, tiny: bool) -> tuple[int, str]:
    """torch's CPU threads for the run, and why: ``requested``, else 1 for the tiny model, else the idle cores.

    Two threads of one matrix product wait for each other at every step: where other jobs keep the cores
    busy, each waits for the other to be scheduled, and two threads ran 2x slower than one (measured on 2
    cores at a load average of 4, docs/demo.md). So the default counts the cores the load average leaves idle.
    """
    cores = os.cpu_count() or 1
    if requested is not None:
        return requested, "--threads"
    if tiny:
        # A 0.1M-parameter model is fastest on one thread: more only add synchronisation.
        return 1, "a tiny model runs fastest on one"
    try:
        load = os.getloadavg()[0]  # runnable processes, averaged over the last minute (Unix)
    except (AttributeError, OSError):
        return cores, f"{cores} cores"
    idle = max(1, min(cores, int(cores - load + 0.5)))
    return idle, f"{cores} cores, load average {load:.1f} before the run: {idle} idle; --threads to choose"
