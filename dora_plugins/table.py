"""The DoRA paper's table 1 from lm-eval results: one row per run and scoring method, a column per benchmark.

Reads the results files that ``lm_eval --output_path`` writes (``<folder>/<model>/results_<time>.json``, with
``samples_<task>_<time>.jsonl`` beside them under ``--log_samples``) for the ``dora_commonsense`` tasks (a row
per extractor, ``improved`` and ``original``), the ``dora_commonsense_mc`` tasks (a row ``mc``: the label words)
and the ``dora_commonsense_text`` tasks (rows ``text`` and ``text_norm``: each option's text, acc and acc_norm):
accuracy in % per benchmark, the plain mean of the eight (the paper's "Avg."), and how many answers the extractor could
not read. A row whose run departs from the paper's protocol (greedy or other generation settings, ``--limit``,
few-shot, a chat template or system instruction, another prompt) says how in its ``protocol``, read from what
lm-eval recorded: rows are never mixed silently. Reference rows are the paper's own numbers.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from .benchmarks import BENCHMARKS, Benchmark
from .errors import DataError, MissingFileError
from .prompts import eval_prompt
from .suggestions import did_you_mean

COLUMNS = [*(b.title for b in BENCHMARKS), "Avg."]
GENERATION_METHODS = ("improved", "original")  # the filters of the dora_* tasks; a plugin's filters follow
MC = "mc"  # the row of the dora_*_mc tasks (log-likelihood of the label words, metric acc)
# The rows of the dora_*_text tasks (log-likelihood of each option's text): method -> metric
TEXT_METHODS = {"text": "acc,none", "text_norm": "acc_norm,none"}
LOGLIKELIHOOD = (MC, *TEXT_METHODS)  # rows without generated answers
# What the dora_* tasks ask lm-eval for: the paper's beam search 4, no sampling, 32 new tokens, stop at EOS only.
PAPER_GENERATION = {"until": [], "num_beams": 4, "do_sample": False, "max_gen_toks": 32}

# Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation" (ICML 2024, arXiv 2402.09353), table 1:
# accuracy (%) on BoolQ PIQA SIQA HellaSwag WinoGrande ARC-e ARC-c OBQA, and the average the paper prints;
# as reproduced in the README of NVlabs/DoRA. DoRA-dagger is DoRA at half LoRA's rank.
PAPER_TABLE_1 = {
    "LLaMA-7B": {
        "LoRA r=32": [67.5, 80.8, 78.2, 83.4, 80.4, 78.0, 62.6, 79.1, 76.3],
        "DoRA† r=16": [70.0, 82.6, 79.7, 83.2, 80.6, 80.6, 65.4, 77.6, 77.5],
        "DoRA r=32": [69.7, 83.4, 78.6, 87.2, 81.0, 81.9, 66.2, 79.2, 78.4],
    },
    "LLaMA2-7B": {
        "LoRA r=32": [69.8, 79.9, 79.5, 83.6, 82.6, 79.8, 64.7, 81.0, 77.6],
        "DoRA† r=16": [72.0, 83.1, 79.9, 89.1, 83.0, 84.5, 71.0, 81.2, 80.5],
        "DoRA r=32": [71.8, 83.7, 76.0, 89.1, 82.6, 83.7, 68.2, 82.4, 79.7],
    },
    "LLaMA3-8B": {
        "LoRA r=32": [70.8, 85.2, 79.9, 91.7, 84.3, 84.2, 71.2, 79.0, 80.8],
        "DoRA† r=16": [74.5, 88.8, 80.3, 95.5, 84.7, 90.1, 79.1, 87.2, 85.0],
        "DoRA r=32": [74.6, 89.3, 79.9, 95.5, 85.6, 90.5, 80.4, 85.8, 85.2],
    },
}


@dataclass(frozen=True)
class Row:
    """One row of the table: a run scored one way, or a row of the paper."""

    run: str  # the adapter's or model's folder name, or "paper: LLaMA2-7B"
    method: str  # "improved", "original", "mc", "text", "text_norm", or the paper's method ("DoRA r=32")
    scores: dict[str, float]  # column title -> accuracy in %, for the benchmarks the run scored
    average: float | None  # the plain mean of the eight; None unless all eight were scored
    unread: int | None = None  # answers the extractor could not read (from the logged samples); None: unknown
    protocol: tuple[str, ...] = ()  # how the run departs from the paper's protocol; () is the paper's
    source: str = ""  # the results file, or the paper

    @property
    def protocol_text(self) -> str:
        """``paper``, or the departures from it: ``greedy; limit 2 of 40``."""
        return "; ".join(self.protocol) or "paper"

    def cells(self) -> list[float | None]:
        """The scores in column order (``None`` where a benchmark was not scored), then the average."""
        return [self.scores.get(title) for title in COLUMNS[:-1]] + [self.average]


def results_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The lm-eval results files named by ``paths``: files as they are, folders searched for ``results_*.json``."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise MissingFileError(f"{given} does not exist. Pass lm-eval's --output_path folder or a results file.")
        if path.is_dir():
            files = sorted(path.rglob("results_*.json"))
            if not files:
                raise DataError(
                    f"{given} holds no lm-eval results file (results_*.json). Pass the --output_path folder of an "
                    "lm_eval run, or a results JSON file."
                )
            found += files
        else:
            found.append(path)
    return found


def rows_from_results(path: Path) -> list[Row]:
    """The rows of one lm-eval results file: one per extractor of the dora_* tasks, ``mc``, ``text``, ``text_norm``."""
    results = _read_results(path)
    samples = _samples(path, results)
    run = run_name(results["config"].get("model_args"), path)
    rows = []
    for method in _methods(results["results"]):
        tasks = {b.title: _task(b, method) for b in BENCHMARKS}
        metric = "acc,none" if method == MC else TEXT_METHODS.get(method, f"acc,{method}")
        scores = {
            title: 100 * results["results"][task][metric]
            for title, task in tasks.items()
            if metric in results["results"].get(task, {})
        }
        scored = [task for title, task in tasks.items() if title in scores]
        average = statistics.fmean(scores.values()) if len(scores) == len(BENCHMARKS) else None
        unread = None if method in LOGLIKELIHOOD else _unread(samples, scored, method)
        protocol = protocol_notes(results, scored, samples, generation=method not in LOGLIKELIHOOD)
        rows.append(Row(run, method, scores, average, unread, protocol, str(path)))
    return rows


def _task(benchmark: Benchmark, method: str) -> str:
    """The lm-eval task whose results make ``method``'s row."""
    if method == MC:
        return benchmark.mc_task
    return benchmark.text_task if method in TEXT_METHODS else benchmark.task


def _read_results(path: Path) -> dict:
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not a readable JSON file ({exc}); pass lm-eval's results_*.json") from exc
    missing = [key for key in ("results", "configs", "config") if not isinstance(results, dict) or key not in results]
    if missing:
        raise DataError(f"{path} is not an lm-eval results file: it has no {', '.join(map(repr, missing))}")
    return results


def _methods(results: Mapping[str, Mapping]) -> list[str]:
    """The extractors (filters) that scored the dora_* tasks, ours first, then ``mc`` and ``text`` where they ran."""
    filters = {key.split(",", 1)[1] for b in BENCHMARKS for key in results.get(b.task, {}) if key.startswith("acc,")}
    methods = [m for m in GENERATION_METHODS if m in filters] + sorted(filters - set(GENERATION_METHODS))
    if any("acc,none" in results.get(b.mc_task, {}) for b in BENCHMARKS):
        methods.append(MC)
    if any("acc,none" in results.get(b.text_task, {}) for b in BENCHMARKS):
        methods += list(TEXT_METHODS)
    return methods


def run_name(model_args: str | Mapping | None, path: Path) -> str:
    """The adapter's folder name (``peft=``), else the model's (``pretrained=``), else the results folder's."""
    if isinstance(model_args, str):  # as the command line spells it: "pretrained=...,peft=..."
        model_args = dict(item.split("=", 1) for item in model_args.split(",") if "=" in item)
    model_args = model_args or {}
    for key in ("peft", "pretrained"):
        if model_args.get(key):
            return Path(str(model_args[key]).rstrip("/")).name
    return path.parent.name


def _samples(path: Path, results: Mapping) -> dict[str, list[dict]]:
    """The logged samples of each of our tasks in the run, where ``--log_samples`` wrote them beside the results."""
    stamp = path.stem.removeprefix("results_")
    samples = {}
    tasks = [(b.task, True) for b in BENCHMARKS] + [(t, False) for b in BENCHMARKS for t in (b.mc_task, b.text_task)]
    for task, generation in tasks:
        file = path.with_name(f"samples_{task}_{stamp}.jsonl")
        if task in results["results"] and file.is_file():
            samples[task] = [_sample(file, number, line, generation) for number, line in _lines(file)]
    return samples


def _lines(file: Path) -> list[tuple[int, str]]:
    return [(number, line) for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1) if line]


def _sample(file: Path, number: int, line: str, generation: bool) -> dict:
    """One logged sample, with the fields the table reads: the doc's instruction, the prompt, the extracted answer."""
    try:
        sample = json.loads(line)
        fields = [sample["doc"]["instruction"], _prompt(sample)]
        if generation:  # the extracted answer; a log-likelihood sample holds scores there
            fields.append(sample["filtered_resps"][0])
    except (json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        if isinstance(exc, json.JSONDecodeError):
            problem = f"is not JSON ({exc})"
        else:
            problem = f"lacks {exc.args[0]!r}" if isinstance(exc, KeyError) else f"has another shape ({exc})"
        raise DataError(
            f"{file}, line {number}: the sample {problem}; expected the samples that lm_eval --log_samples writes"
        ) from exc
    if not all(isinstance(value, str) for value in fields):
        what = "instruction, prompt and filtered_resps" if generation else "instruction and prompt"
        raise DataError(f"{file}, line {number}: the sample's {what} must be text")
    return sample


def _unread(samples: Mapping[str, list[dict]], tasks: list[str], method: str) -> int | None:
    if not tasks or any(task not in samples for task in tasks):
        return None
    return sum(s["filtered_resps"][0] == "" for task in tasks for s in samples[task] if s.get("filter") == method)


def protocol_notes(results: Mapping, tasks: list[str], samples: Mapping[str, list[dict]], generation: bool) -> tuple:
    """How the run of ``tasks`` departs from the paper's protocol, from what lm-eval recorded; () when it does not."""
    notes: list[str] = []
    for task in tasks:
        config = results["configs"].get(task, {})
        if generation:
            notes += generation_notes(config.get("generation_kwargs") or {})
        counts = results.get("n-samples", {}).get(task, {})
        if counts.get("effective", 0) < counts.get("original", 0):
            notes.append(f"limit {counts['effective']} of {counts['original']}")
        if config.get("num_fewshot"):
            notes.append(f"{config['num_fewshot']}-shot")
        if config.get("description"):
            notes.append("task description")
        if any(_prompt(sample) != eval_prompt(sample["doc"]["instruction"]) for sample in samples.get(task, [])):
            notes.append("another prompt")
    if results.get("chat_template"):
        notes.append("chat template")
    if results.get("system_instruction"):
        notes.append("system instruction")
    return tuple(dict.fromkeys(notes))  # in order, once


def generation_notes(kwargs: Mapping) -> list[str]:
    """``greedy``, ``sampling`` or ``key=value`` for each generation setting that is not the paper's."""
    notes = []
    if kwargs.get("do_sample"):
        notes.append("sampling")
    elif kwargs.get("num_beams", 1) == 1:
        notes.append("greedy")
    for key in sorted(set(kwargs) | set(PAPER_GENERATION)):
        if key not in ("num_beams", "do_sample") and kwargs.get(key) != PAPER_GENERATION.get(key):
            notes.append(f"{key}={kwargs.get(key)!r}")
    if kwargs.get("num_beams", 1) not in (1, PAPER_GENERATION["num_beams"]):
        notes.append(f"num_beams={kwargs['num_beams']}")
    return notes


def _prompt(sample: Mapping) -> str:
    """The context lm-eval sent for a logged sample (the prompt, before any answer or choice)."""
    return sample["arguments"]["gen_args_0"]["arg_0"]


def reference_rows(models: Iterable[str]) -> list[Row]:
    """The paper's rows (LoRA, DoRA-dagger, DoRA) for each of ``models`` ("LLaMA2-7B", ... or "all")."""
    by_lower = {name.lower(): name for name in [*PAPER_TABLE_1, "all"]}
    names = []
    for given in models:
        if given.lower() not in by_lower:
            hint = did_you_mean(given, by_lower.values())
            raise DataError(f"The paper has no model '{given}'.{hint} Available: {', '.join(by_lower.values())}")
        names += list(PAPER_TABLE_1) if given.lower() == "all" else [by_lower[given.lower()]]
    rows = []
    for model in dict.fromkeys(names):
        for method, numbers in PAPER_TABLE_1[model].items():
            scores = dict(zip(COLUMNS[:-1], numbers[:-1], strict=True))
            rows.append(Row(f"paper: {model}", method, scores, numbers[-1], source="Liu et al. 2024, table 1"))
    return rows


def read_table(paths: Iterable[str | os.PathLike], reference: Iterable[str] = ()) -> list[Row]:
    """The rows of every lm-eval results file under ``paths``, then the paper's rows for ``reference``."""
    reference = list(reference)
    paper = reference_rows(reference) if reference else []  # a bad model name fails before any file is read
    files = results_files(paths)
    rows = [row for path in files for row in rows_from_results(path)]
    if not rows:
        raise DataError(
            f"No results of the dora_commonsense, dora_commonsense_mc or dora_commonsense_text tasks in "
            f"{', '.join(map(str, files))}. Run lm_eval with --tasks dora_commonsense,dora_commonsense_text"
        )
    return _distinct_runs(rows) + paper


def _distinct_runs(rows: list[Row]) -> list[Row]:
    """Rows of two results files of the same run name are told apart by the file's time stamp."""
    sources: dict[str, set[str]] = {}
    for row in rows:
        sources.setdefault(row.run, set()).add(row.source)
    return [
        replace(row, run=f"{row.run} ({Path(row.source).stem.removeprefix('results_')})")
        if len(sources[row.run]) > 1
        else row
        for row in rows
    ]
