"""``dora rescore``: re-extract the answers of saved generations with ``original`` and ``improved``, side by side.

Reads the output files of the paper's evaluation script (``experiment/<model>-<adapter>-<benchmark>.json``:
a JSON list of records with ``instruction``, ``answer``, ``output_pred``, ...), JSON Lines files whose
rows carry ``benchmark``, ``answer`` and ``output_pred`` (as ``shared/data/generations/``), and the samples
that ``lm_eval --log_samples`` writes for the ``dora_*`` tasks. Prints, per file and benchmark: n, accuracy
with each extractor, and how many answers each could not read.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from dora_plugins.benchmarks import get_benchmark, load_llm_adapters, options_from_instruction, read_records
from dora_plugins.errors import DataError
from dora_plugins.plugins import get_answer_extractors, get_benchmarks

METHODS = ("original", "improved")


@dataclass
class Score:
    """Counts for one (file, benchmark): rows, correct answers and unread ("") answers per extractor."""

    file: str
    benchmark: str
    n: int = 0
    correct_original: int = 0
    correct_improved: int = 0
    unread_original: int = 0
    unread_improved: int = 0

    def accuracy(self, method: str) -> float:
        return getattr(self, f"correct_{method}") / self.n if self.n else 0.0


def read_rows(path: Path) -> list[dict]:
    """The records of one file: a JSON list (the paper's ``experiment/*.json``) or JSON Lines."""
    if not path.is_file():
        raise DataError(f"No file {path}. Pass the paper's experiment/*.json files or *.jsonl generations.")
    rows = read_records(path)
    if not all(isinstance(row, dict) for row in rows):
        raise DataError(f"{path} must hold a JSON list of records (objects), as the paper's experiment/*.json do")
    return rows


def from_lm_eval_samples(rows: list[dict]) -> list[dict]:
    """Rows of lm-eval's ``samples_dora_*.jsonl`` as generation rows; other rows unchanged.

    lm-eval logs every doc once per filter, with the same raw generation: the first filter's rows are kept.
    """
    if not rows or "doc" not in rows[0] or "resps" not in rows[0]:
        return rows
    first = rows[0].get("filter")
    return [
        {**{key: row["doc"].get(key) for key in ("benchmark", "answer", "instruction", "options")},
         "output_pred": row["resps"][0][0]}
        for row in rows
        if row.get("filter") == first
    ]  # fmt: skip


def benchmark_from_name(path: Path, names: list[str]) -> str | None:
    """The benchmark a file name ends with: ``LLaMA-7B-DoRA-ARC-Easy.json``, ``run__piqa.jsonl``."""
    stem = path.stem
    found = [name for name in names if stem == name or stem.endswith(("-" + name, "_" + name))]
    return max(found, key=len) if found else None


def _options(row: dict, benchmark: str, data_dir: Path | None, cache: dict) -> list[str] | None:
    """The item's answer texts: given, or from its instruction, or from ``data_dir`` by ``index``, or unknown."""
    if row.get("options"):
        return row["options"]
    if row.get("instruction"):
        return options_from_instruction(row["instruction"]) or None
    if data_dir is None or "index" not in row:
        return None
    if benchmark not in cache:
        cache[benchmark] = [item["options"] for item in load_llm_adapters(data_dir, benchmark)]
    return cache[benchmark][row["index"]]


def score_file(path: Path, default_benchmark: str | None, data_dir: Path | None) -> list[Score]:
    """Scores of one file, one per benchmark in it, in order of first appearance."""
    names = list(get_benchmarks())
    extractors = {method: get_answer_extractors()[method].value for method in METHODS}
    fallback = default_benchmark or benchmark_from_name(path, names)
    scores: dict[str, Score] = {}
    cache: dict = {}
    for i, row in enumerate(from_lm_eval_samples(read_rows(path))):
        benchmark = row.get("benchmark") or fallback
        if benchmark not in names:
            raise DataError(
                f"{path}: record {i} has no known benchmark ({benchmark!r}). Name the file after it "
                f"(e.g. LLaMA-7B-DoRA-boolq.json) or pass --benchmark; known: {', '.join(names)}"
            )
        missing = [field for field in ("answer", "output_pred") if not isinstance(row.get(field), str)]
        if missing:
            raise DataError(f"{path}: record {i} has no field '{missing[0]}' (each record needs answer, output_pred)")
        options = _options(row, benchmark, data_dir, cache)
        score = scores.setdefault(benchmark, Score(path.name, benchmark))
        score.n += 1
        for method, extractor in extractors.items():
            predicted = extractor(row["output_pred"], benchmark, options)
            setattr(score, f"correct_{method}", getattr(score, f"correct_{method}") + (predicted == row["answer"]))
            setattr(score, f"unread_{method}", getattr(score, f"unread_{method}") + (predicted == ""))
    return list(scores.values())


def format_table(scores: list[Score]) -> str:
    """A plain-text table: one line per file and benchmark."""
    width = max([len(s.file) for s in scores] + [4])
    columns = f"{'n':>6}  {'original':>8} {'unread':>6}  {'improved':>8} {'unread':>6}"
    lines = [f"{'file':<{width}}  {'benchmark':<13} {columns}"]
    lines.append("-" * len(lines[0]))
    for s in scores:
        cells = [f"{100 * s.accuracy(m):>7.2f}% {getattr(s, f'unread_{m}'):>6}" for m in METHODS]
        lines.append(f"{s.file:<{width}}  {s.benchmark:<13} {s.n:>6}  " + "  ".join(cells))
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dora rescore", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "files", nargs="+", type=Path, help="experiment/*.json files, *.jsonl generations or lm-eval samples_*.jsonl"
    )
    parser.add_argument("--benchmark", help="benchmark of rows that name none, when the file name does not say it")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="LLM-Adapters dataset/ folder: answer texts for rows that have an 'index' but no 'instruction'",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.benchmark:
        get_benchmark(args.benchmark)  # an unknown name fails here, with the close names
    scores = [score for path in args.files for score in score_file(path, args.benchmark, args.data_dir)]
    if args.json:
        rows = [
            {**asdict(s), "acc_original": s.accuracy("original"), "acc_improved": s.accuracy("improved")}
            for s in scores
        ]
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(scores))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
