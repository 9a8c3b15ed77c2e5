"""Compare the per-test outcomes of the stock and the routed run of PEFT's DoRA tests, and say what differs."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
FAILING = ("failed", "error")
OURS = "dora_plugins."
PEFT_LINEAR = "peft.tuners.lora.dora.DoraLinearLayer"


@dataclass(frozen=True)
class Outcome:
    """One test of one run, as ``peft_suite_plugin`` wrote it."""

    id: str
    outcome: str
    message: str = ""
    layers: tuple[str, ...] = ()

    def uses(self, ours: bool) -> bool:
        """Whether the test created one of our DoRA layers (``ours``) or one of PEFT's."""
        return any(layer.startswith(OURS) == ours for layer in self.layers)


MISSING = Outcome("", "missing", "no outcome: the run stopped before this test")


def read_outcomes(path: Path) -> dict[str, Outcome]:
    """Test id -> outcome, from the JSON-lines file of one run."""
    rows = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()) if path.exists() else ()
    return {row["id"]: Outcome(row["id"], row["outcome"], row["message"], tuple(row["layers"])) for row in rows}


@dataclass
class Comparison:
    """What the two runs did, and every difference that makes the check fail (``problems``)."""

    stock: dict[str, Outcome]
    routed: dict[str, Outcome]
    regressions: list[tuple[Outcome, Outcome]] = field(default_factory=list)
    intentional: list[tuple[Outcome, Outcome, str]] = field(default_factory=list)
    fixed: list[tuple[Outcome, Outcome]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def compare(stock: dict[str, Outcome], routed: dict[str, Outcome], intentional: dict[str, str]) -> Comparison:
    """Pair the runs test by test. A problem: a test passes stock but not routed (and is not listed in
    ``intentional``), the stock run created one of our layers, or the routed run created none of ours where
    the stock run created PEFT's DoRA layer for ``nn.Linear`` (routing had no effect)."""
    result = Comparison(stock, routed)
    for test_id, before in stock.items():
        after = routed.get(test_id, MISSING)
        if test_id in intentional:
            result.intentional.append((before, after, intentional[test_id]))
        elif before.outcome == "passed" and after.outcome != "passed":
            result.regressions.append((before, after))
        elif before.outcome in FAILING and after.outcome == "passed":
            result.fixed.append((before, after))
    if result.regressions:
        result.problems.append(f"{len(result.regressions)} tests pass stock and fail routed")
    if any(o.uses(ours=True) for o in stock.values()):
        result.problems.append("the stock run created dora-plugins layers: something routed it (DORA_PLUGINS_ROUTE?)")
    peft_linear = sum(PEFT_LINEAR in o.layers for o in stock.values())
    if peft_linear and not any(o.uses(ours=True) for o in routed.values()):
        result.problems.append(
            f"the routed run created none of our layers, where the stock run created PEFT's DoraLinearLayer in "
            f"{peft_linear} tests: routing had no effect"
        )
    return result


def _counts(run: dict[str, Outcome]) -> str:
    counts = Counter(o.outcome for o in run.values())
    parts = [f"{counts[name]} {name}" for name in OUTCOMES if counts[name]]
    layers = f"PEFT's DoRA layers in {sum(o.uses(False) for o in run.values())} tests, ours in "
    return f"{len(run)} results: {', '.join(parts)}; {layers}{sum(o.uses(True) for o in run.values())}"


def _by_reason(title: str, pairs: list[tuple[Outcome, Outcome]], reason_of, with_ids: bool = True) -> list[str]:
    """``title (N)``, then each reason with its count and, if asked, its test ids."""
    if not pairs:
        return []
    groups: dict[str, list[str]] = defaultdict(list)
    for pair in pairs:
        groups[reason_of(pair)].append(pair[0].id)
    lines = [f"\n{title} ({len(pairs)}):"]
    for reason, ids in sorted(groups.items(), key=lambda item: -len(item[1])):
        lines.append(f"  [{len(ids)}] {reason}")
        lines.extend(f"      {test_id}" for test_id in ids if with_ids)
    return lines


def format_report(result: Comparison) -> str:
    """The counts of both runs, then tests that cannot run here, intentional differences, and regressions."""
    pairs = [(o, result.routed.get(o.id, MISSING)) for o in result.stock.values()]
    lines = [f"stock:  {_counts(result.stock)}", f"routed: {_counts(result.routed)}"]
    both_fail = [(a, b) for a, b in pairs if a.outcome in FAILING and b.outcome in FAILING]
    lines += _by_reason("fail in both runs (cannot run here)", both_fail, lambda p: f"{p[0].outcome}: {p[0].message}")
    both_skip = [(a, b) for a, b in pairs if a.outcome == b.outcome == "skipped"]
    lines += _by_reason("skipped in both runs", both_skip, lambda p: p[0].message, with_ids=False)
    if result.intentional:
        lines.append(f"\nintentional differences, listed in the script ({len(result.intentional)}):")
        for before, after, reason in result.intentional:
            lines.append(f"  {before.id}: stock {before.outcome}, routed {after.outcome}\n      ({reason})")
    lines += _by_reason("fail stock, pass routed", result.fixed, lambda p: f"stock {p[0].outcome}: {p[0].message}")
    lines += _by_reason(
        "PASS STOCK, FAIL ROUTED", result.regressions, lambda p: f"routed {p[1].outcome}: {p[1].message}"
    )
    verdict = "; ".join(result.problems) or "every test that passes stock passes routed"
    lines.append(f"\n{'FAILED' if result.problems else 'OK'}: {verdict}")
    return "\n".join(lines)
