"""Drift report: which answers of ``improved`` change over the real generations, by kind, against a baseline.

Reads every row of ``<data>/generations/*.jsonl`` (62,391 rows), gives ``improved`` the item's answer texts
(from the row's instruction, or from ``<data>/llm_adapters/<benchmark>/test.json`` by index, as lm-eval's
tasks do) and compares its answer with a baseline: the answers of an earlier ``improved``, stored compactly
(per file, one digit per row: 0 for "", k for the k-th label). ``--labelled`` adds hand-labelled sets
(``tests/data/*_labels.jsonl``; key ``labelled:<file stem>``). Each change is classed by direction and by the
rule that now decides (``explain_answer``). Rows that state exactly one in-range label as
``the correct answer is X`` and name no other label must never change. Per benchmark, the report gives the
accuracy of ``original`` and of ``improved`` before (the baseline) and now, and how many rows each leaves unread.

    python tools/extract_drift.py --data ../shared/data                 # counts by kind, examples, accuracy
    python tools/extract_drift.py --data ../shared/data --json          # the same, as JSON (the tests read it)
    python tools/extract_drift.py --data ../shared/data --labelled tests/data/smollm2_labels.jsonl \
        --baseline tests/data/extract_improved_35b5ac3.json            # before and after the SmolLM2 rules
    python tools/extract_drift.py --data ../shared/data --write-baseline tests/data/extract_improved_3d2e637.json
    python tools/extract_drift.py --score --labelled tests/data/smollm2_labels.jsonl [--first-row 349]
                                                                        # agreement with the hand labels, by rule

``--write-baseline`` runs with whatever ``dora_plugins`` is importable: ``extract_improved_3d2e637.json`` was
written with commit 3d2e637 on PYTHONPATH (``git worktree add /tmp/base 3d2e637``), the ``improved`` before
answers in words; ``extract_improved_35b5ac3.json`` (with ``--labelled tests/data/smollm2_labels.jsonl``) with
commit 35b5ac3, the ``improved`` before the rules for enumerations, yes/no, filled sentences and restated
questions.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

from dora_plugins.benchmarks import get_benchmark, load_llm_adapters, options_from_instruction
from dora_plugins.extract import improved


def real_rows(data: Path, labelled: list[Path] = ()):
    """(file stem, row, the item's answer texts) for every generation row, in file order; then the labelled sets."""
    for path in labelled:
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            yield f"labelled:{path.stem}", row, row["options"]
    cache: dict = {}
    for path in sorted((data / "generations").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            benchmark = row["benchmark"]
            if "instruction" in row:
                options = options_from_instruction(row["instruction"])
            else:
                if benchmark not in cache:
                    cache[benchmark] = load_llm_adapters(data / "llm_adapters", benchmark)
                options = cache[benchmark][row["index"]]["options"]
            yield path.stem, row, options


def _digit(label: str, labels: tuple[str, ...]) -> str:
    return str(labels.index(label) + 1) if label else "0"


def baseline(data: Path, labelled: list[Path] = ()) -> dict[str, str]:
    """The answers of the importable ``improved``, per file, one digit per row."""
    digits: dict[str, list[str]] = {}
    for stem, row, options in real_rows(data, labelled):
        said = improved(row["output_pred"], row["benchmark"], options)
        digits.setdefault(stem, []).append(_digit(said, get_benchmark(row["benchmark"]).labels))
    return {stem: "".join(values) for stem, values in digits.items()}


def states_one_label(text: str, in_range: tuple[str, ...], labels: tuple[str, ...]) -> str | None:
    """X when the text says 'the correct answer is X' (any case) for one in-range X and names no other label."""
    text = text.lower()
    stated = set(re.findall(r"the correct answer is (\w+)", text)) & set(in_range)
    named = {label for label in labels if re.search(rf"(?<![a-z0-9]){label}(?![a-z0-9])", text)}
    return stated.pop() if len(stated) == 1 and named == stated else None


def drift(data: Path, stored: dict[str, str], labelled: list[Path] = ()) -> dict:
    """Counts of changed answers by kind, the changed rows, how many rows that state one label changed, and the
    accuracy per benchmark of ``original`` and of ``improved`` before and now."""
    from dora_plugins.extract import explain_answer, original

    changed, line_of = [], Counter()
    contract_changed = rows = 0
    tally: dict[str, Counter] = {}
    for stem, row, options in real_rows(data, labelled):
        line_of[stem] += 1
        rows += 1
        labels = get_benchmark(row["benchmark"]).labels
        old = stored[stem][line_of[stem] - 1]
        old = labels[int(old) - 1] if old != "0" else ""
        explained = explain_answer(row["output_pred"], row["benchmark"], options)
        group = "labelled" if stem.startswith("labelled:") else "real"
        counts = tally.setdefault(f"{group}:{row['benchmark']}", Counter())
        paper = original(row["output_pred"], row["benchmark"])
        for name, said in (("original", paper), ("before", old), ("after", explained.label)):
            counts[f"{name} correct"] += said == row["answer"]
            counts[f"{name} unread"] += not said
        counts["rows"] += 1
        if explained.label == old:
            continue
        in_range = labels[: len(options)] if row["benchmark"] != "boolq" else labels
        stated = states_one_label(row["output_pred"], in_range, labels) is not None
        contract_changed += stated and group == "real"  # on the real rows, the contract of DESIGN.md
        direction = "now read" if not old else "now refused" if not explained.label else "now another label"
        changed.append(
            {
                "id": f"{stem}:{line_of[stem]}",
                "kind": f"{direction}: {explained.rule}",
                "old": old,
                "new": explained.label,
                "gold": row["answer"],
                "output_pred": row["output_pred"],
            }
        )
    kinds = Counter(change["kind"] for change in changed if not change["id"].startswith("labelled:"))
    return {
        "rows": rows - sum(line_of[stem] for stem in line_of if stem.startswith("labelled:")),
        "changed": sum(kinds.values()),
        "contract_changed": contract_changed,
        "kinds": dict(kinds),
        "labelled_kinds": dict(Counter(c["kind"] for c in changed if c["id"].startswith("labelled:"))),
        "accuracy": {key: _accuracy(counts) for key, counts in sorted(tally.items())},
        "rows_changed": changed,
    }


def score_labelled(path: Path, first_row: int = 1) -> dict:
    """``improved`` against a hand-labelled set (rows ``first_row`` on, 1-based): agreement on the rows the reader
    could decide (not ``ambiguous``), the false reads (an answer where the reader saw none, or another answer), the
    misses (nothing read where the reader saw an answer) and which rule decided, per row and in all."""
    from dora_plugins.extract import explain_answer

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()][first_row - 1 :]
    decidable = [row for row in rows if not row["ambiguous"]]
    rules: Counter = Counter()
    false_reads, misses = [], []
    for row in decidable:
        explained = explain_answer(row["output_pred"], row["benchmark"], row["options"])
        rules[explained.rule] += 1
        if explained.label != row["label"]:
            wrong = {"id": row["id"], "label": row["label"], "read": explained.label, "rule": explained.rule}
            (false_reads if explained.label else misses).append(wrong | {"output_pred": row["output_pred"]})
    wrong = len(false_reads) + len(misses)
    return {
        "rows": len(rows),
        "decidable": len(decidable),
        "agreement": round(1 - wrong / len(decidable), 4) if decidable else None,
        "false_reads": false_reads,
        "misses": misses,
        "rules": dict(rules.most_common()),
    }


def _print_scores(scores: dict[str, dict]) -> None:
    for name, score in scores.items():
        share = len(score["false_reads"]) / score["decidable"] if score["decidable"] else 0.0
        print(
            f"\n{name}: {score['rows']} rows, {score['decidable']} decidable; agreement {score['agreement']}, "
            f"false reads {len(score['false_reads'])} ({share:.2%}), misses {len(score['misses'])}"
        )
        print("  rules: " + ", ".join(f"{rule} {count}" for rule, count in score["rules"].items()))
        for wrong in score["false_reads"] + score["misses"]:
            print(
                f"  {wrong['id']}: labelled {wrong['label']!r}, read {wrong['read']!r} ({wrong['rule']}): "
                f"{wrong['output_pred'][:100]!r}"
            )


def _accuracy(counts: Counter) -> dict:
    n = counts["rows"]
    return {"rows": n} | {
        f"{name} {what}": round(counts[f"{name} {what}"] / n, 4) if what == "correct" else counts[f"{name} {what}"]
        for name in ("original", "before", "after")
        for what in ("correct", "unread")
    }


def _print(report: dict, examples: int) -> None:
    print(f"{report['changed']} of {report['rows']} answers change", end="; ")
    print(f"of them, rows that state one label explicitly: {report['contract_changed']}")
    for title, key in (("real rows", "kinds"), ("labelled sets", "labelled_kinds")):
        print(f"\n{title}:")
        for kind, count in sorted(report[key].items(), key=lambda item: -item[1]):
            print(f"{count:6}  {kind}")
            wanted = [c for c in report["rows_changed"] if c["kind"] == kind]
            for change in [c for c in wanted if c["id"].startswith("labelled:") == (key != "kinds")][:examples]:
                print(
                    f"        {change['id']}: {change['old']!r} -> {change['new']!r} (gold {change['gold']}): "
                    f"{change['output_pred'][:100]!r}"
                )
    print("\naccuracy (unread rows) per benchmark: original | improved before | improved now")
    for key, acc in report["accuracy"].items():
        print(
            f"  {key:26} {acc['rows']:6}  {acc['original correct']:.4f} ({acc['original unread']:5}) | "
            f"{acc['before correct']:.4f} ({acc['before unread']:5}) | "
            f"{acc['after correct']:.4f} ({acc['after unread']:5})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="the shared data folder")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "tests/data/extract_improved_3d2e637.json",
    )
    parser.add_argument("--labelled", type=Path, nargs="*", default=[], help="hand-labelled sets (JSON Lines) too")
    parser.add_argument("--write-baseline", type=Path, help="write the importable improved's answers here instead")
    parser.add_argument(
        "--score",
        action="store_true",
        help="score improved against the --labelled sets' hand labels (agreement, false reads, rules) instead",
    )
    parser.add_argument(
        "--first-row", type=int, default=1, help="with --score: the labelled rows from this one on (1-based)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--examples", type=int, default=3, help="examples shown per kind")
    args = parser.parse_args()
    if args.write_baseline:
        answers = baseline(args.data, args.labelled)
        args.write_baseline.write_text(json.dumps(answers, indent=0) + "\n", encoding="utf-8")
        return
    if args.score:
        scores = {path.stem: score_labelled(path, args.first_row) for path in args.labelled}
        print(json.dumps(scores, indent=1, ensure_ascii=False)) if args.json else _print_scores(scores)
        return
    report = drift(args.data, json.loads(args.baseline.read_text(encoding="utf-8")), args.labelled)
    if args.json:
        print(json.dumps(report, indent=1, ensure_ascii=False))
        return
    _print(report, args.examples)


if __name__ == "__main__":
    main()
