"""Re-extract the answers of saved generations with any registered extractors, and count them side by side.

Three inputs: the output files of the paper's evaluation script (``experiment/<model>-<adapter>-<benchmark>.json``:
a JSON list of records with ``instruction``, ``answer``, ``output_pred``, ...), JSON Lines rows with ``benchmark``,
``answer`` and ``output_pred`` (as ``shared/data/generations/``), and the samples that ``lm_eval --log_samples``
writes for the ``dora_*`` tasks. Every row is checked before it is scored; a bad one is an error that names the
file, the line or record, and the field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .benchmarks import load_llm_adapters, options_from_instruction
from .errors import DataError, UnknownNameError
from .extract import explain_answer, get_extractor
from .plugins import get_benchmarks, lookup
from .records import located_records, optional_texts, require_field, require_object

DEFAULT_METHODS = ("original", "improved")  # the paper's extractor and ours; any registered name works
_ROW_FIELDS = ("answer", "output_pred")
_SAMPLE_DOC_FIELDS = ("benchmark", "answer")


@dataclass(frozen=True)
class Row:
    """One saved generation to score: where it is, its benchmark, gold label, output and answer texts."""

    where: str  # "<path>, line 26" or "<path>, record 3"
    benchmark: str
    answer: str
    output: str
    options: list[str] | None


@dataclass
class Score:
    """Counts for one (file, benchmark): rows, and per extractor the correct and the unread ("") answers."""

    file: str
    benchmark: str
    n: int = 0
    correct: dict[str, int] = field(default_factory=dict)
    unread: dict[str, int] = field(default_factory=dict)

    def add(self, method: str, predicted: str, answer: str) -> None:
        self.correct[method] = self.correct.get(method, 0) + (predicted == answer)
        self.unread[method] = self.unread.get(method, 0) + (predicted == "")

    def accuracy(self, method: str) -> float:
        return self.correct.get(method, 0) / self.n if self.n else 0.0

    def to_json(self) -> dict:
        extractors = {
            method: {"accuracy": self.accuracy(method), "correct": self.correct[method], "unread": self.unread[method]}
            for method in self.correct
        }
        return {"file": self.file, "benchmark": self.benchmark, "n": self.n, "extractors": extractors}


def extractors(methods: Sequence[str]) -> dict[str, Callable[[str, str, Sequence[object] | None], str]]:
    """The registered extractors called ``methods``, in order; an unknown name fails before any file is read."""
    return {method: get_extractor(method) for method in dict.fromkeys(methods)}


def benchmark_from_name(path: Path, names: Sequence[str]) -> str | None:
    """The benchmark a file name ends with: ``LLaMA-7B-DoRA-ARC-Easy.json``, ``run__piqa.jsonl``."""
    stem = path.stem
    found = [name for name in names if stem == name or stem.endswith(("-" + name, "_" + name))]
    return max(found, key=len) if found else None


def read_rows(path: Path, benchmark: str | None = None, data_dir: Path | None = None) -> list[Row]:
    """The checked rows of one file; ``benchmark`` names those that do not (default: from the file name)."""
    names = list(get_benchmarks())
    fallback = benchmark or benchmark_from_name(path, names)
    located = located_records(path)
    if located and isinstance(located[0][1], Mapping) and "doc" in located[0][1] and "resps" in located[0][1]:
        located = _from_lm_eval_samples(located)
    items: dict[str, list[dict]] = {}
    rows = []
    for where, record in located:
        record = require_object(record, where, _ROW_FIELDS)
        name = _benchmark_of(record, where, fallback, names)
        answer, output = (
            require_field(record, key, str, where, "each row needs answer, output_pred") for key in _ROW_FIELDS
        )
        rows.append(Row(where, name, answer, output, _options(record, where, name, data_dir, items)))
    return rows


def _from_lm_eval_samples(located: list[tuple[str, Any]]) -> list[tuple[str, dict]]:
    """Rows of lm-eval's ``samples_dora_*.jsonl`` as generation rows (doc fields and the raw generation).

    lm-eval logs every doc once per filter, with the same raw generation: the first filter's rows are kept.
    """
    first = located[0][1].get("filter")
    rows = []
    for where, sample in located:
        sample = require_object(sample, where, ("doc", "resps", "filter"))
        if sample.get("filter") != first:
            continue
        doc = require_field(sample, "doc", Mapping, where, "lm-eval samples hold the task's doc")
        resps = require_field(sample, "resps", list, where, "lm-eval samples hold resps: [[generation]]")
        if not resps or not isinstance(resps[0], list) or not resps[0] or not isinstance(resps[0][0], str):
            raise DataError(
                f"{where}: field 'resps' must be [[generation text], ...] as lm-eval logs it, not {resps!r:.60}"
            )
        keys = (*_SAMPLE_DOC_FIELDS, "instruction", "options")
        rows.append((where, {**{key: doc[key] for key in keys if key in doc}, "output_pred": resps[0][0]}))
    return rows


def _benchmark_of(record: Mapping, where: str, fallback: str | None, names: list[str]) -> str:
    name = require_field(record, "benchmark", str, where) if "benchmark" in record else fallback
    if name in names:
        return name
    if name is None:
        raise DataError(
            f"{where}: no benchmark: the row has no 'benchmark' field and the file name ends with none. Name the "
            f"file after it (e.g. LLaMA-7B-DoRA-boolq.json) or pass --benchmark; known: {', '.join(names)}"
        )
    try:
        return lookup("benchmark", name).name
    except UnknownNameError as exc:
        raise DataError(f"{where}: {exc}") from None


def _options(record: Mapping, where: str, benchmark: str, data_dir: Path | None, items: dict) -> list[str] | None:
    """The item's answer texts: given, or from its instruction, or from ``data_dir`` by ``index``, or unknown."""
    options = optional_texts(record, "options", where)
    if options:
        return options
    if record.get("instruction") is not None:
        return options_from_instruction(require_field(record, "instruction", str, where)) or None
    if data_dir is None or "index" not in record:
        return None
    index = require_field(record, "index", int, where, f"the item's number in {benchmark}/test.json")
    if benchmark not in items:
        items[benchmark] = load_llm_adapters(data_dir, benchmark)
    if not 0 <= index < len(items[benchmark]):
        raise DataError(
            f"{where}: field 'index' is {index}, but {Path(data_dir) / benchmark / 'test.json'} has "
            f"{len(items[benchmark])} items (0 to {len(items[benchmark]) - 1}). Is --data-dir the dataset the run used?"
        )
    return items[benchmark][index]["options"]


def score_file(
    path: Path, benchmark: str | None = None, data_dir: Path | None = None, methods: Sequence[str] = DEFAULT_METHODS
) -> list[Score]:
    """Scores of one file, one per benchmark in it, in order of first appearance."""
    chosen = extractors(methods)
    scores: dict[str, Score] = {}
    for row in read_rows(path, benchmark, data_dir):
        score = scores.setdefault(row.benchmark, Score(path.name, row.benchmark))
        score.n += 1
        for method, extractor in chosen.items():
            score.add(method, extractor(row.output, row.benchmark, row.options), row.answer)
    return list(scores.values())


def explain_file(
    path: Path, benchmark: str | None = None, data_dir: Path | None = None, methods: Sequence[str] = DEFAULT_METHODS
) -> Iterator[dict]:
    """Per row: where it is, the gold label, each extractor's label, and the rule ``improved`` applied."""
    chosen = extractors(methods)
    for row in read_rows(path, benchmark, data_dir):
        why = explain_answer(row.output, row.benchmark, row.options)
        yield {
            "where": row.where,
            "benchmark": row.benchmark,
            "answer": row.answer,
            "labels": {
                method: extractor(row.output, row.benchmark, row.options) for method, extractor in chosen.items()
            },
            "rule": why.rule,
            "evidence": why.evidence,
            "ignored": list(why.ignored),
            "output_pred": row.output,
        }
