"""Sample the real generations that the hand-labelled extractor set is made of (``tests/data/extract_labels.jsonl``).

The population is every row of ``<data>/generations/*.jsonl`` where the two built-in extractors disagree or
``improved`` returns "" (the messy rows; clean rows are covered by the tests over the whole corpus). Within
each file the rows are de-duplicated by output text (one broken run repeats the same echo 564 times), shuffled
with a fixed seed, and at most ``--per-file`` of them are kept, so that every file and benchmark with such rows
is present and no single broken run dominates.

Each sampled row keeps where it came from (file, line, index), the item's question and answer texts, what the
model wrote, the gold answer and the paper's stored prediction, plus empty ``label``, ``ambiguous`` and ``why``
fields for the person who labels it. ``--show`` prints rows for reading without any extractor's output or the
gold answer, so that the label records what the text says, not what a program read.

The set in the repository was sampled with the extractors of commit 3d2e637 (before the rules that read option
texts inside sentences): with a later ``improved`` the same command selects other rows.

    python tools/sample_extract_rows.py --data ../shared/data --output tests/data/extract_labels.jsonl
    python tools/sample_extract_rows.py --show tests/data/extract_labels.jsonl --start 0 --count 50
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from dora_plugins.benchmarks import load_llm_adapters, options_from_instruction
from dora_plugins.extract import improved
from dora_plugins.records import read_records


def _items(data: Path, benchmark: str, cache: dict) -> list[dict] | None:
    """The LLM-Adapters items of a benchmark, or None when its test.json is not in ``data`` (HellaSwag)."""
    if benchmark not in cache:
        folder = data / "llm_adapters"
        cache[benchmark] = load_llm_adapters(folder, benchmark) if (folder / benchmark).is_dir() else None
    return cache[benchmark]


def _candidates(path: Path, data: Path, cache: dict) -> list[dict]:
    """The rows of one generation file where the extractors disagree or ``improved`` reads nothing."""
    found = []
    for line, row in enumerate(read_records(path), start=1):
        items = _items(data, row["benchmark"], cache)
        instruction = row.get("instruction") or items[row["index"]]["instruction"]
        options = options_from_instruction(instruction)
        said = improved(row["output_pred"], row["benchmark"], options)
        if said == row["pred"] and said:
            continue
        found.append(
            {
                "id": f"{path.stem}:{line}",
                "benchmark": row["benchmark"],
                "index": row["index"],
                "question": instruction.split("\n\n", 1)[0],
                "options": options,
                "output_pred": row["output_pred"],
                "answer": row["answer"],
                "pred": row["pred"],
                "label": None,
                "ambiguous": None,
                "why": None,
            }
        )
    return found


def sample(data: Path, per_file: int, seed: int) -> list[dict]:
    """Up to ``per_file`` distinct outputs per generation file, in file order."""
    cache: dict = {}
    rows = []
    for path in sorted((data / "generations").glob("*.jsonl")):
        distinct = list({row["output_pred"]: row for row in reversed(_candidates(path, data, cache))}.values())
        distinct.reverse()  # the first row of each output text, in file order
        random.Random(f"{seed}:{path.name}").shuffle(distinct)
        rows += sorted(distinct[:per_file], key=lambda row: int(row["id"].rsplit(":", 1)[1]))
    return rows


def show(path: Path, start: int, count: int) -> None:
    """Print rows for labelling: the question, the options and the output, nothing any extractor said."""
    for number, row in enumerate(read_records(path)[start : start + count], start=start):
        print(f"=== #{number} {row['id']} [{row['benchmark']}]")
        print(f"Q: ...{row['question'][-240:]}")
        for i, option in enumerate(row["options"], start=1):
            print(f"  {i}: {option[:160]}")
        print(f"OUT: {row['output_pred']!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="the shared data folder")
    parser.add_argument("--output", type=Path, help="where to write the sampled rows (JSON Lines)")
    parser.add_argument("--per-file", type=int, default=100, help="at most this many distinct outputs per file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=Path, help="print the rows of this set for labelling instead")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--count", type=int, default=50)
    args = parser.parse_args()
    if args.show:
        show(args.show, args.start, args.count)
        return
    if args.output is None:
        parser.error("--output is required when sampling")
    rows = sample(args.data, args.per_file, args.seed)
    args.output.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    print(f"{len(rows)} rows from {len({row['id'].rsplit(':', 1)[0] for row in rows})} files -> {args.output}")


if __name__ == "__main__":
    main()
