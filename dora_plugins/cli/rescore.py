"""``dora rescore``: re-extract the answers of saved generations with any registered extractors, side by side.

Reads the paper's ``experiment/*.json`` files, JSON Lines generations and lm-eval's ``samples_dora_*.jsonl``
(see :mod:`dora_plugins.rescore`). Prints, per file and benchmark: n, and per extractor the accuracy and how many
answers it could not read; with ``--explain``, every row with each extractor's answer and the rule of ``improved``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dora_plugins.rescore import DEFAULT_METHODS, Score, explain_file, extractors, score_file

FORMATS = ("text", "json", "jsonl")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dora rescore",
        description="Re-extract the answers of saved generations with any registered extractors, side by side.",
    )
    parser.add_argument(
        "files", nargs="+", type=Path, help="experiment/*.json files, *.jsonl generations or lm-eval samples_*.jsonl"
    )
    parser.add_argument(
        "--method",
        action="append",
        metavar="NAME",
        help=f"an answer extractor ('dora plugins' lists them), repeatable; default: {', '.join(DEFAULT_METHODS)}",
    )
    parser.add_argument("--benchmark", help="benchmark of rows that name none, when the file name does not say it")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="LLM-Adapters dataset/ folder: answer texts for rows that have an 'index' but no 'instruction'",
    )
    parser.add_argument(
        "--explain", action="store_true", help="one line per row: each extractor's answer and why improved read it"
    )
    parser.add_argument("--format", choices=FORMATS, default="text", help="text (default), json or jsonl")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    methods = args.method or list(DEFAULT_METHODS)
    extractors(methods)  # an unknown name fails here, with the close names, before any file is read
    if args.benchmark:
        from dora_plugins.benchmarks import get_benchmark

        get_benchmark(args.benchmark)
    if args.explain:
        for path in args.files:
            for row in explain_file(path, args.benchmark, args.data_dir, methods):
                print(json.dumps(row, ensure_ascii=False) if args.format != "text" else _explained(row))
        return 0
    scores = [score for path in args.files for score in score_file(path, args.benchmark, args.data_dir, methods)]
    if args.format == "json":
        print(json.dumps([score.to_json() for score in scores], indent=2))
    elif args.format == "jsonl":
        print("\n".join(json.dumps(score.to_json()) for score in scores))
    else:
        print(format_table(scores, list(dict.fromkeys(methods))))
    return 0


def _explained(row: dict) -> str:
    labels = "  ".join(f"{method}={label or '-'}" for method, label in row["labels"].items())
    why = f"{row['rule']}: {row['evidence']!r}" if row["evidence"] else row["rule"]
    ignored = f"  (ignored: {'; '.join(row['ignored'])})" if row["ignored"] else ""
    return f"{row['where']}  gold={row['answer']}  {labels}  [{why}]{ignored}"


def format_table(scores: list[Score], methods: list[str]) -> str:
    """An aligned text table: one line per file and benchmark; per extractor its accuracy and unread answers."""
    from pytablewriter import SpaceAlignedTableWriter
    from pytablewriter.style import Style

    headers = ["file", "benchmark", "n"] + [name for method in methods for name in (method, "unread")]
    rows = [
        [s.file, s.benchmark, s.n] + [cell for m in methods for cell in (f"{100 * s.accuracy(m):.2f}%", s.unread[m])]
        for s in scores
    ]
    styles = [Style(align="left"), Style(align="left")] + [Style(align="right")] * (len(headers) - 2)
    writer = SpaceAlignedTableWriter(headers=headers, value_matrix=rows, column_styles=styles, margin=1)
    return writer.dumps().rstrip("\n")


if __name__ == "__main__":
    raise SystemExit(main())
