"""``improved`` on a model it was not written for: hand-labelled SmolLM2-135M generations of the paper's prompts.

The set (``tests/data/smollm2_labels.jsonl``, README there) was labelled before any extractor ran on it. The rules
of :mod:`dora_plugins.answer_forms` were written looking at the tuning part only; the held-out part (a fixed hash
of the row id) checks that they generalize.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest
from helpers import REPO

from dora_plugins.benchmarks import BENCHMARKS, get_benchmark
from dora_plugins.extract import RULES, explain_answer, improved, original

ROWS = [json.loads(line) for line in (REPO / "tests/data/smollm2_labels.jsonl").read_text("utf-8").splitlines()]
DECIDABLE = [row for row in ROWS if not row["ambiguous"]]


def held_out(row: dict) -> bool:
    """One row in three, by a fixed hash of its id: never looked at while the rules were written."""
    return hashlib.sha256(row["id"].encode()).digest()[0] % 3 == 0


PARTS = {"tuning": [r for r in DECIDABLE if not held_out(r)], "held-out": [r for r in DECIDABLE if held_out(r)]}


def score(rows: list[dict], extractor=improved) -> tuple[float, list[tuple]]:
    """Agreement with the hand labels, and the false reads: a label where the reader saw none, or another."""
    said = [extractor(row["output_pred"], row["benchmark"], row["options"]) for row in rows]
    wrong = [(row["id"], row["label"], got) for row, got in zip(rows, said, strict=True) if got != row["label"]]
    return 1 - len(wrong) / len(rows), [w for w in wrong if w[2]]


def test_the_set_spans_benchmarks_sources_and_checkpoints():
    assert len(ROWS) >= 340
    assert {row["benchmark"] for row in ROWS} == {benchmark.name for benchmark in BENCHMARKS}
    sources = Counter(row["source"] for row in ROWS)
    assert "base" in sources
    for preset in ("lora", "dora"):
        assert len([s for s in sources if s.startswith(f"{preset}@")]) >= 2, sources  # several checkpoints
    assert all(isinstance(row["ambiguous"], bool) and row["why"] for row in ROWS)
    assert all(row["label"] in ("", *get_benchmark(row["benchmark"]).labels) for row in ROWS)
    assert min(len(part) for part in PARTS.values()) >= 100


@pytest.mark.parametrize("part", PARTS)
def test_improved_agrees_with_the_hand_labels_of_smollm2(part):
    agreement, false_reads = score(PARTS[part])
    assert agreement >= 0.98, (agreement, false_reads)


def test_improved_rarely_invents_an_answer_on_smollm2():
    """False reads over the whole set: an answer where the reader saw none, or another answer."""
    agreement, false_reads = score(DECIDABLE)
    assert agreement >= 0.98
    assert len(false_reads) <= 0.005 * len(DECIDABLE), false_reads


def test_original_agrees_less_on_smollm2():
    """The paper's regex reads 'true' in 'true/false' echoes and the first label of every list."""
    assert score(DECIDABLE, original)[0] < score(DECIDABLE)[0]


def test_every_new_rule_decides_rows_of_the_set():
    rules = Counter(explain_answer(r["output_pred"], r["benchmark"], r["options"]).rule for r in DECIDABLE)
    assert set(rules) <= set(RULES)
    for rule in ("enumeration", "yes/no", "filled sentence", "restated question"):
        assert rules[rule] > 0, rules


def test_no_extractor_raises_on_any_smollm2_row():
    for row in ROWS:
        for options in (row["options"], None, [None, *row["options"][1:]]):
            explained = explain_answer(row["output_pred"], row["benchmark"], options)
            assert explained.rule in RULES
            assert explained.label == improved(row["output_pred"], row["benchmark"], options)


def test_docs_extraction_examples():
    """The examples of docs/extraction.md."""
    from dora_plugins.extract import extract_answer

    assert extract_answer("1. Yes\n2. No\n\nThe answer is: 1. Yes", "boolq") == "true"
    explained = explain_answer("1. Use a hair dryer.\n2. Use an oven.", "piqa", ["Use a hair dryer.", "Use an oven."])
    assert (explained.label, explained.rule) == ("", "enumeration")
