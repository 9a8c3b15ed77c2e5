"""Data, prompt and scoring of the ``dora_*``, ``dora_*_mc`` and ``dora_*_text`` tasks (their ``_template*``).

Docs are ``{"benchmark", "instruction", "answer", "options"}``. By default they are built from the
benchmark's canonical Hugging Face dataset by ``dora_plugins.benchmarks.from_hf``; with
``--metadata '{"data_dir": DIR}'`` they are read from LLM-Adapters' ``DIR/<benchmark>/test.json``
(the files the DoRA paper scored on), offline. lm-eval passes the task metadata, which includes
``--metadata`` and the model arguments, to :func:`load_docs` as keyword arguments.

The generation tasks score the label an extractor reads from the model's answer; the ``_mc`` tasks
score, after the same prompt, the log-likelihood of the answer the paper's models were trained to
write for each label (:data:`ANSWER_TEMPLATE`, LLM-Adapters' ``output`` field); the ``_text`` tasks score
each option's own text, as lm-eval's ``arc_easy`` and ``piqa`` do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import datasets

from dora_plugins.benchmarks import DataError, from_hf, get_benchmark, load_llm_adapters
from dora_plugins.prompts import eval_prompt
from lm_eval_tasks.errors import show_user_errors_briefly

SPLIT = "test"  # the one split load_docs returns; _template_yaml names it as test_split
DOC_FIELDS = ("instruction", "answer", "options")
ANSWER_TEMPLATE = "the correct answer is {label}"  # LLM-Adapters' "output" of every training and test item

show_user_errors_briefly()  # lm-eval is loading our tasks: a DataError below prints as one message


def load_docs(benchmark: str, data_dir: str | None = None, **_metadata) -> datasets.DatasetDict:
    """The docs of one benchmark: from ``data_dir`` (LLM-Adapters layout) if given, else from Hugging Face."""
    if data_dir:
        items = load_llm_adapters(data_dir, benchmark)
        if not items:
            raise DataError(
                f"{Path(data_dir) / benchmark / 'test.json'} holds no items (an empty list): lm-eval needs at least "
                f"one. Pass a data_dir whose {benchmark}/test.json has LLM-Adapters' items."
            )
    else:
        items = docs_from_hf(benchmark, _load_hf_rows(benchmark))
    docs = [{"benchmark": benchmark, **{key: item[key] for key in DOC_FIELDS}} for item in items]
    return datasets.DatasetDict({SPLIT: datasets.Dataset.from_list(docs)})


def docs_from_hf(benchmark: str, rows: Iterable[Mapping]) -> list[dict]:
    """LLM-Adapters' instruction, answer and options for each row of the benchmark's HF dataset, in order."""
    return [from_hf(benchmark, row, index=i) for i, row in enumerate(rows)]


def _load_hf_rows(benchmark: str) -> datasets.Dataset:
    spec = get_benchmark(benchmark)
    try:
        return datasets.load_dataset(spec.hf_path, spec.hf_name, split=spec.hf_split)
    except Exception as exc:
        source = f"{spec.hf_path} ({spec.hf_name or 'default'}, {spec.hf_split})"
        raise DataError(
            f"{benchmark}: could not load the Hugging Face dataset {source}: {type(exc).__name__}: {exc}. "
            'Offline, pass LLM-Adapters\' dataset/ folder instead: --metadata \'{"data_dir": "/path/to/dataset"}\''
        ) from exc


def doc_to_text(doc: Mapping) -> str:
    """The paper's evaluation prompt around the doc's instruction, byte for byte."""
    return eval_prompt(doc["instruction"])


def process_results(doc: Mapping, results: list[str]) -> dict[str, float]:
    """``acc``: 1.0 when the filter's extracted label is the doc's answer."""
    return {"acc": float(results[0] == doc["answer"])}


def item_labels(doc: Mapping) -> list[str]:
    """The labels of the doc's options, in order: ``answer1..answer4`` for a 4-option ARC item."""
    labels = get_benchmark(doc["benchmark"]).labels[: len(doc["options"])]
    if len(labels) < 2 or doc["answer"] not in labels:
        raise DataError(
            f"{doc['benchmark']}: the item {doc['instruction'][:80]!r} lists {len(doc['options'])} options and answers "
            f"{doc['answer']!r}; a log-likelihood task needs 2 or more options and an answer among {list(labels)}"
        )
    return list(labels)


def doc_to_choice(doc: Mapping) -> list[str]:
    """The continuations whose log-likelihood is scored: ``the correct answer is <label>`` for each label."""
    return [ANSWER_TEMPLATE.format(label=label) for label in item_labels(doc)]


def doc_to_option_texts(doc: Mapping) -> list[str]:
    """The continuations of the ``_text`` tasks: each option's own text, in the order of the item's labels."""
    item_labels(doc)  # the same checks as the _mc tasks
    return list(doc["options"])


def doc_to_target_index(doc: Mapping) -> int:
    """The position of the doc's answer among :func:`doc_to_choice` (and :func:`doc_to_option_texts`)."""
    return item_labels(doc).index(doc["answer"])
