"""``improved`` on a model it was not written for: hand-labelled SmolLM2-135M generations of the paper's prompts.

The set (``tests/data/smollm2_labels.jsonl``, README there) was labelled before any extractor ran on it. The rules
of :mod:`dora_plugins.answer_forms` were written looking at the tuning part of the first round; the held-out part
(a fixed hash of the row id) and the later rounds (rows sampled and labelled after the rules were written; each
round's misses generalized the rules before the next round was read, README) check that they generalize.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from helpers import REPO, SHARED_DATA, requires_shared_data

from dora_plugins.benchmarks import BENCHMARKS, get_benchmark
from dora_plugins.extract import RULES, explain_answer, improved, original

ROWS = [json.loads(line) for line in (REPO / "tests/data/smollm2_labels.jsonl").read_text("utf-8").splitlines()]
DECIDABLE = [row for row in ROWS if not row["ambiguous"]]
FIRST_ROUND = 348  # rows labelled before the rules were written; those after: rounds two to eleven (README)


def held_out(row: dict) -> bool:
    """One row in three, by a fixed hash of its id: never looked at while the rules were written."""
    return hashlib.sha256(row["id"].encode()).digest()[0] % 3 == 0


FIRST = [row for row in ROWS[:FIRST_ROUND] if not row["ambiguous"]]
PARTS = {
    "tuning": [r for r in FIRST if not held_out(r)],
    "held-out": [r for r in FIRST if held_out(r)],
    "later rounds": [row for row in ROWS[FIRST_ROUND:] if not row["ambiguous"]],
}


def score(rows: list[dict], extractor=improved) -> tuple[float, list[tuple]]:
    """Agreement with the hand labels, and the false reads: a label where the reader saw none, or another."""
    said = [extractor(row["output_pred"], row["benchmark"], row["options"]) for row in rows]
    wrong = [(row["id"], row["label"], got) for row, got in zip(rows, said, strict=True) if got != row["label"]]
    return 1 - len(wrong) / len(rows), [w for w in wrong if w[2]]


def test_the_set_spans_benchmarks_sources_and_checkpoints():
    assert len(ROWS) >= 1400
    assert len({row["id"] for row in ROWS}) == len(ROWS)
    assert {row["benchmark"] for row in ROWS} == {benchmark.name for benchmark in BENCHMARKS}
    sources = Counter(row["source"] for row in ROWS)
    assert "base" in sources
    for preset in ("lora", "dora"):
        assert len([s for s in sources if s.startswith(f"{preset}@")]) >= 4, sources  # several checkpoints
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


BARBELL = ["swings and lands in her arms.", "pulls the barbell forward.", "pulls a rope to the barbell."]
RINGS = ["Pull the wire apart as far as possible", "Twist the ring open sideways with pliers"]


SIDES = ["The Sun shines on this side of Earth all the time.", "The Moon lights this side of Earth."]


@pytest.mark.parametrize(
    ("text", "benchmark", "options", "label", "rule"),
    [
        # bare labels inside a restated question are the question's words, not an answer
        ("1. It is.\n2. It is not.\n\nQuestion: is it true that", "boolq", None, "", "enumeration"),
        ("Question: is it true that the sky is blue?\nTrue", "boolq", None, "true", "label"),
        # ... but a statement after the question's lead-in keeps its label, blank or no blank in the text
        (
            "the correct answer to the question: HNO_{3} is made how is answer1: HNO_{3",
            "ARC-Easy",
            None,
            "answer1",
            "label",
        ),
        # a copied instruction: the options it names are the question's
        (
            "Answer format: option1/option2\n\n### Instruction:\nPlease choose the correct answer to fill in the "
            "blank to complete the given sentence: When Benjamin",
            "winogrande",
            ["Benjamin", "Adam"],
            "",
            "restated question",
        ),
        # ending 2 narrated, then ending 1's first words cut off by the token limit: two endings
        (
            "1. She is close to a wall. She begins to brush her lips and make painted lips look just like a lip",
            "hellaswag",
            [
                "she begins to brush her lips and make painted lips look just like a lipstick.",
                "she is close to a wall.",
            ],
            "",
            "contradiction",
        ),
        # a cut-off copy of the stated ending itself names no other ending
        (
            "She is close to a wall. She is close to",
            "hellaswag",
            ["she begins to brush her lips and make painted lips look.", "she is close to a wall."],
            "ending2",
            "option text",
        ),
        # the question's first half said twice (and cut off) names each option once per copy: no filler
        (
            "1. The boy hid under the desk instead of the table. The boy hid under the desk instead of",
            "winogrande",
            ["desk", "table"],
            "",
            "contradiction",
        ),
        (
            "The boy hid under the desk instead of the table because the desk was sturdy.",
            "winogrande",
            ["desk", "table"],
            "option1",
            "filled sentence",
        ),
        # the same answer on two "Answer:" lines is one answer said twice; two different ones are a list
        (
            "Question: Which moves?\nAnswer: Weasel\n\nQuestion: Which moves?\nAnswer: Weasel\n",
            "openbookqa",
            ["weasel", "willow"],
            "answer1",
            "option text",
        ),
        (
            "Question: Which moves?\nAnswer: Weasel\nAnswer: Willow\n",
            "openbookqa",
            ["weasel", "willow"],
            "",
            "enumeration",
        ),
        # the fourth round: "Answer: 1. <text> Answer2:" is the prompt's option list, its "1." no stated answer
        ("Question: Which unit?\n\nAnswer: 1. meter Answer2:", "ARC-Easy", ["meter", "kilometer"], "", "echo"),
        # an answer cut off by the token limit after "Answer:", in words that open one option only
        (
            "Question: Remove seeds\n Answer: Chop up the strawberries, pour the mixture through a fine",
            "piqa",
            [
                "Blend the strawberries, pour the mixture through a fine strainer",
                "Chop up the strawberries, pour the mixture through a fine strainer",
            ],
            "solution2",
            "option text",
        ),
        # ... not when the words open both options, nor after a list mark
        (
            "Answer: Pour the mixture through a fine",
            "piqa",
            ["Pour the mixture through a fine sieve", "Pour the mixture through a fine cloth"],
            "",
            "no answer",
        ),
        (
            "1. Chop up the strawberries, pour the mixture",
            "piqa",
            ["Blend the strawberries, pour the mixture well", "Chop up the strawberries, pour the mixture well"],
            "",
            "no answer",
        ),
        # the fifth round: a bare label that a yes/no contradicts; a filled sentence read before the loop starts;
        # the question's stem said again and completed with another option, cut off
        ("1. Yes.\n   False.\n\nQuestion: is it?", "boolq", None, "", "contradiction"),
        ("False. No, it is not.", "boolq", None, "false", "label"),
        (
            "The sound of the foot was heard from the street because the sound of the foot was heard from the street",
            "winogrande",
            ["street", "sound"],
            "",
            "no answer",
        ),
        (
            "Plates are best described as a trend toward more movement. Plates are best described as a series of",
            "ARC-Easy",
            ["trend toward more movement.", "series of events that happen quickly."],
            "",
            "contradiction",
        ),
        (
            "Plates are best described as a trend toward more movement. Plates are best described as a trend",
            "ARC-Easy",
            ["trend toward more movement.", "series of events that happen quickly."],
            "answer1",
            "option text",
        ),
        # the sixth round: a yes to the request is no verdict; "a true story" is an adjective; articles the
        # response adds do not hide an option, but an option's own opening article must be there
        ("Yes, I can answer this question with true/false.", "boolq", None, "", "echo"),
        ("Yes, I can be a dual citizen in japan.", "boolq", None, "true", "yes/no"),
        (
            "1. It is based on a true story.\n2. It is not based on a true story.\n3. It",
            "boolq",
            None,
            "",
            "enumeration",
        ),
        (
            "The answer is a caterpillar and a butterfly.",
            "openbookqa",
            ["rabbit and hare", "caterpillar and butterfly"],
            "answer2",
            "option text",
        ),
        (
            "Give them the same amount of food each day.",
            "ARC-Easy",
            ["the separate tanks", "the amount of food"],
            "",
            "no answer",
        ),
        # the seventh round: a list whose second number the token limit left alone on its line
        (
            "Question: Which?\n\n   Answer: 1. cracking a rock\n   2",
            "ARC-Easy",
            ["cracking a rock", "a dune"],
            "",
            "enumeration",
        ),
        # the eighth round: the stem said again and completed otherwise, cut off; the same answer said again reads
        (
            "TV improved safety by using larger screens. TV improved safety by avoiding ads. TV",
            "ARC-Easy",
            ["using larger screens", "warning people"],
            "",
            "contradiction",
        ),
        (
            "1. The answer is 188. The answer is 188. The answer is 18",
            "ARC-Easy",
            ["23", "47", "94", "188"],
            "answer4",
            "option text",
        ),
        # before the ninth round, readings made more conservative (refuse rather than guess): three opening words
        # of another option cut off after a narrated one; "Answer: 1. <words>" (a list's first mark); a label
        # inside a list entry that nothing after the list picks
        ("The lady swings and lands in her arms. She pulls the barbell", "hellaswag", BARBELL, "", "contradiction"),
        ("The lady swings and lands in her arms. She pulls the", "hellaswag", BARBELL, "ending1", "option text"),
        ("Question: How?\n Answer: 1. Pull the wire of the ring", "piqa", RINGS, "", "no answer"),
        ("Question: How?\n Answer: 1.", "piqa", RINGS, "solution1", "explicit statement"),
        ("The correct answer is 1. It is the best.", "piqa", RINGS, "solution1", "explicit statement"),
        (
            '1. The answer to the question "Maria told Katrina to help" is option 1.\n\n2. The',
            "winogrande",
            ["Maria", "Katrina"],
            "",
            "enumeration",
        ),
        ('1. The answer is "True"\n   2. The answer is "True"\n   3. The', "boolq", None, "", "enumeration"),
        ("1. Yes.\n   2. No.\n\nQuestion: is it?\n\nThe answer is true.", "boolq", None, "true", "explicit statement"),
        # ... and a WinoGrande option named only once the response loops (six words said again)
        (
            "The tool could not get through the cervix because the tool could not get through the cervix because the "
            "tool",
            "winogrande",
            ["cervix", "tool"],
            "",
            "no answer",
        ),
        (
            "The tool could not get through the cervix because the tool was too big.",
            "winogrande",
            ["cervix", "tool"],
            "option2",
            "filled sentence",
        ),
        # after the tenth round: an "Answer:" on the restated question's line; a unit that ends an option ("50%");
        # a cut-off "Yes, I"; "1) no"; both WinoGrande names with no blank filled; "either ... or"; a filled
        # sentence before an echo of the option list that pairs each label with its own text; a yes/no list
        # followed by the question answered, or by "The answer is: 1"
        (
            "Question: Why is it day? Answer: The Sun shines on this side of",
            "ARC-Easy",
            SIDES,
            "answer1",
            "option text",
        ),
        (
            "Question: Why is it day?\nAnswer: The Sun shines on this side of",
            "ARC-Easy",
            SIDES,
            "answer1",
            "option text",
        ),
        ('The answer to the question "How much?" is "50%".', "ARC-Easy", ["75%", "50%"], "answer2", "option text"),
        ('The answer to the question "How much?" is "50%" or "75%".', "ARC-Easy", ["75%", "50%"], "", "contradiction"),
        ("Yes, I can answer this.\n\nQuestion: Is it?\n\nYes, I", "boolq", None, "", "no answer"),
        ("Question: Is it?\n\nYes, it is.", "boolq", None, "true", "yes/no"),
        ("1) no", "boolq", None, "false", "yes/no"),
        (
            "Ann hurt Bo's feelings but not Cy's because Ann hurt Bo's feelings but not Cy's because Ann",
            "winogrande",
            ["Bo", "Cy"],
            "",
            "restated question",
        ),
        ('The answer to "Ann or Bo" is either option 1 or option', "winogrande", ["Ann", "Bo"], "", "contradiction"),
        ('The answer to "Ann or Bo" is option 1', "winogrande", ["Ann", "Bo"], "option1", "label"),
        (
            "He paid for the phone, not the tablet, as the tablet was pricy. Option1: Phone Option2: Tablet",
            "winogrande",
            ["Phone", "Tablet"],
            "option2",
            "filled sentence",
        ),
        (
            "1: Phone 2: Tablet. He paid for the phone, not the tablet, as the tablet was pricy.",
            "winogrande",
            ["Phone", "Tablet"],
            "",
            "echo",
        ),
        (
            "He paid for the phone, not the tablet, as the tablet was pricy. Option1: Tablet Option2: Phone",
            "winogrande",
            ["Phone", "Tablet"],
            "",
            "echo",
        ),
        ("1. Yes.\n   2. No.\n\n   Question: Is it?\n\n   Yes.\n\n   Question:", "boolq", None, "true", "yes/no"),
        ("1. Yes.\n   2. No.\n\n   Question: Is it?\n\n   1. Yes.\n   2. No.", "boolq", None, "", "enumeration"),
        ("1. Yes.\n   2. No.\n\nQuestion: Is it?\n\nThe answer is: 2", "boolq", None, "false", "yes/no"),
    ],
)
def test_later_round_forms(text, benchmark, options, label, rule):
    """Forms the later rounds showed (README): each rule reads them, and a near miss is read as before."""
    explained = explain_answer(text, benchmark, options)
    assert (explained.label, explained.rule) == (label, rule)


@requires_shared_data
@pytest.mark.slow
def test_the_smollm2_rules_change_no_real_row_and_move_labelled_rows_to_their_label():
    """Drift against improved of commit 35b5ac3 (before these rules): none of the 62,391 real rows changes, and
    every labelled row whose read changed now reads what the reader saw (or was marked ambiguous)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, str(REPO / "tools/extract_drift.py"), "--data", str(SHARED_DATA), "--json"]
    command += ["--labelled", str(REPO / "tests/data/smollm2_labels.jsonl")]
    command += ["--baseline", str(REPO / "tests/data/extract_improved_35b5ac3.json")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["rows"], report["changed"], report["contract_changed"]) == (62391, 0, 0)
    changed = [c for c in report["rows_changed"] if c["id"].startswith("labelled:")]
    assert len(changed) >= 40
    for change in changed:
        row = ROWS[int(change["id"].rsplit(":", 1)[1]) - 1]  # "labelled:smollm2_labels:<line>"
        assert row["ambiguous"] or change["new"] == row["label"], (row["id"], change)
