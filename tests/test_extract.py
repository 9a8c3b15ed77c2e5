"""Answer extractors: the paper's ``original`` bit for bit; ``improved`` rule by rule, against a hand-labelled set
of real outputs, over every real row, and against the answers of its previous version (the drift report)."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

import pytest
from helpers import REPO, SHARED_DATA, requires_shared_data, shared_files

from dora_plugins import get_plugin_manager, plugins
from dora_plugins.benchmarks import BENCHMARKS, get_benchmark, load_llm_adapters, options_from_instruction
from dora_plugins.extract import RULES, Explanation, explain_answer, extract_answer, improved, original
from dora_plugins.hookspecs import hookimpl

ARC_OPTIONS = ["density decreases", "years become longer", "days become shorter", "gravity becomes stronger"]
LABELLED = [json.loads(line) for line in (REPO / "tests/data/extract_labels.jsonl").read_text("utf-8").splitlines()]
CLEAR = [row for row in LABELLED if not row["ambiguous"]]
# What changes against improved of commit 3d2e637 over the 62,391 real rows (tools/extract_drift.py; README).
DRIFT = {
    "now read: option text": 19,  # the answer stated as an option's text in a sentence, before an echo
    "now read: label": 2,  # "TrueAnswerFormat:true/false": a label glued to an echo written without a space
    "now read: explicit statement": 1,  # "3 is the correct answer"
    "now refused: echo": 1,  # "Answer11 Answer12 ... Answer18 Answer1": a run cut off mid-token
}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@cache
def _options(benchmark: str) -> list[list[str]] | None:
    folder = SHARED_DATA / "llm_adapters"
    return [item["options"] for item in load_llm_adapters(folder, benchmark)] if (folder / benchmark).is_dir() else None


def _row_options(row: dict) -> list[str]:
    options = _options(row["benchmark"])
    return options[row["index"]] if options else options_from_instruction(row["instruction"])


# ---- real rows --------------------------------------------------------------------------------------------------


@requires_shared_data
def test_generation_files_are_all_there():
    files = shared_files("generations/*.jsonl")
    assert len(files) == 37
    assert sum(len(_rows(path)) for path in files) == 62391


@requires_shared_data
def test_original_extractor_matches_paper_on_real_rows():
    checked = 0
    for path in shared_files("generations/*.jsonl"):  # fails on an empty glob, never passes vacuously
        for row in _rows(path):
            assert original(row["output_pred"], row["benchmark"]) == row["pred"], (path.name, row)
            checked += 1
    assert checked == 62391


def test_original_extractor_matches_paper_on_the_committed_rows():
    """The same check without the corpus: the 514 labelled rows keep the paper's stored prediction."""
    assert len(LABELLED) == 514
    for row in LABELLED:
        assert original(row["output_pred"], row["benchmark"]) == row["pred"], row["id"]


def _stated_answer(row: dict, in_range: tuple[str, ...], all_labels: tuple[str, ...]) -> str | None:
    """X when the text says 'the correct answer is X' (any case) for one in-range X and names no other label."""
    text = row["output_pred"].lower()
    stated = set(re.findall(r"the correct answer is (\w+)", text)) & set(in_range)
    named = {label for label in all_labels if re.search(rf"(?<![a-z0-9]){label}(?![a-z0-9])", text)}
    return stated.pop() if len(stated) == 1 and named == stated else None


@requires_shared_data
def test_improved_reads_every_explicit_answer_in_real_rows():
    checked = 0
    for path in shared_files("generations/*.jsonl"):
        for row in _rows(path):
            labels = get_benchmark(row["benchmark"]).labels
            options = _row_options(row)
            in_range = labels[: len(options)] if row["benchmark"] != "boolq" else labels
            expected = _stated_answer(row, in_range, labels)
            if expected is not None:
                checked += 1
                assert improved(row["output_pred"], row["benchmark"], options) == expected, row
    assert checked > 50_000


@requires_shared_data
def test_improved_refuses_the_format_echoes_that_original_credits():
    [path] = shared_files("generations/Dora-coursework__LLaMA-7B-DoRA__earlier__hellaswag.jsonl")
    echo = (
        "asz123456789\n\nAnswer format: ending1/ending2/ending3/ending4\n                \n                ### Response"
    )
    rows = [row for row in _rows(path) if row["output_pred"] == echo]
    assert len(rows) == 564
    assert {original(row["output_pred"], "hellaswag") for row in rows} == {"ending1"}
    assert {improved(row["output_pred"], "hellaswag", _row_options(row)) for row in rows} == {""}


@requires_shared_data
@pytest.mark.slow
def test_drift_against_the_previous_improved_is_only_the_documented_kinds():
    """Every answer that changed since commit 3d2e637 is of a kind the README explains; stated labels never change."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, str(REPO / "tools/extract_drift.py"), "--data", str(SHARED_DATA), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["rows"] == 62391
    assert report["contract_changed"] == 0
    assert report["kinds"] == DRIFT
    for change in report["rows_changed"]:  # each change reads what the row says: spot-check the kinds
        if change["kind"] == "now refused: echo":
            assert re.search(r"Answer1\d Answer1\d", change["output_pred"])


# ---- the hand-labelled set (tests/data/README.md) ---------------------------------------------------------------


def test_the_labelled_set_spreads_over_files_and_benchmarks():
    assert len({row["id"].rsplit(":", 1)[0] for row in LABELLED}) == 14
    assert {row["benchmark"] for row in LABELLED} == {benchmark.name for benchmark in BENCHMARKS}
    assert all(row["why"] and isinstance(row["ambiguous"], bool) for row in LABELLED)
    assert len(CLEAR) >= 400


def test_improved_agrees_with_the_hand_labels():
    said = [improved(row["output_pred"], row["benchmark"], row["options"]) for row in CLEAR]
    wrong = [(row["id"], row["label"], got) for row, got in zip(CLEAR, said, strict=True) if got != row["label"]]
    false_reads = [w for w in wrong if w[2]]  # a label where the reader saw none, or another label
    assert 1 - len(wrong) / len(CLEAR) >= 0.98, wrong
    assert len(false_reads) <= 0.005 * len(CLEAR), false_reads


def test_original_agrees_less_with_the_hand_labels_because_it_credits_echoes():
    said = [original(row["output_pred"], row["benchmark"]) for row in CLEAR]
    agreement = sum(got == row["label"] for row, got in zip(CLEAR, said, strict=True)) / len(CLEAR)
    assert agreement < 0.85  # 0.78: the paper's regex reads the format line's first label as an answer


def test_no_extractor_raises_on_any_labelled_row():
    for row in LABELLED:
        for options in (row["options"], None, [None, *row["options"][1:]]):
            explained = explain_answer(row["output_pred"], row["benchmark"], options)
            assert explained.rule in RULES and explained.label == improved(
                row["output_pred"], row["benchmark"], options
            )
            assert original(row["output_pred"], row["benchmark"], options) in (
                "",
                *get_benchmark(row["benchmark"]).labels,
            )


# ---- the paper's extractor, by hand ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bench", "text", "expected"),
    [
        ("boolq", "the correct answer is true", "true"),
        ("boolq", "True", ""),  # case-sensitive
        ("boolq", "untrue", "true"),  # no word boundaries
        ("ARC-Easy", "answer12", "answer1"),
        ("ARC-Easy", "Answer2", ""),
        ("social_i_qa", "answer5", "answer5"),  # any of answer1..5, whatever the item
        ("piqa", "solution2 or solution1", "solution2"),  # first match
        ("hellaswag", "x\n\nAnswer format: ending1/ending2", "ending1"),  # credits the echo
        ("winogrande", "option1 ### Response: option2", "option2"),  # after the last ### Response:
        ("openbookqa", "   ", ""),
    ],
)
def test_original_is_first_case_sensitive_match(bench, text, expected):
    assert original(text, bench) == expected
    assert extract_answer(text, bench, method="original") == expected


# ---- improved, rule by rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bench", "text", "expected"),
    [
        ("ARC-Easy", "Answer2", "answer2"),
        ("ARC-Challenge", "answer 2", "answer2"),
        ("openbookqa", "ANSWER3", "answer3"),
        ("social_i_qa", "the correct answer is Answer_1", "answer1"),
        ("piqa", "Solution 1", "solution1"),
        ("piqa", "SOLUTION2.", "solution2"),
        ("boolq", "True", "true"),
        ("boolq", "the correct answer is FALSE.", "false"),
        ("hellaswag", "Ending 3", "ending3"),
        ("winogrande", "Option2", "option2"),
    ],
)
def test_improved_reads_any_case_and_spelling(bench, text, expected):
    assert improved(text, bench) == expected


@pytest.mark.parametrize(
    ("bench", "text"),
    [
        ("ARC-Easy", "answer12"),
        ("ARC-Easy", "the correct answer is answer1a"),
        ("boolq", "untrue"),
        ("boolq", "the correct answer is trueish"),
        ("piqa", "solution10"),
        ("winogrande", "option21"),
        ("hellaswag", "subending2"),
        ("social_i_qa", "answer" + "1" * 5000),
    ],
)
def test_improved_never_reads_a_label_inside_a_longer_token(bench, text):
    assert improved(text, bench) == ""


@pytest.mark.parametrize(
    ("bench", "text", "expected"),
    [
        ("ARC-Easy", "Answer1 is tempting, but the correct answer is answer3", "answer3"),
        ("winogrande", "Answer: option2. option1 is wrong", "option2"),
        ("boolq", "It is not false, the passage says so. Answer: True", "true"),
        ("social_i_qa", 'answer1 and answer2 miss the point. The correct answer is "Answer3".', "answer3"),
        ("hellaswag", "**Answer:** ending4 (ending1 is close)", "ending4"),
        ("piqa", "solution1 looks easy; the best solution is solution2", "solution2"),
    ],
)
def test_improved_prefers_an_explicit_statement(bench, text, expected):
    assert improved(text, bench) == expected


@pytest.mark.parametrize(
    ("bench", "text", "expected"),
    [
        ("hellaswag", "asz123456789\n\nAnswer format: ending1/ending2/ending3/ending4\n      ### Response", ""),
        ("hellaswag", "the correct answer is ending2\n\nAnswer format: ending1/ending2/ending3/ending4", "ending2"),
        ("boolq", "true/false\n\nAnswer format: true/", ""),
        ("boolq", 'Response.statusMessage = "Answer format: true/false";', ""),
        ("ARC-Easy", "answer1/answer2/answer3/answer4", ""),
        ("ARC-Challenge", "the skull of an animal Answer1/answer2/answer3/answer4/answer5", ""),
        ("winogrande", "option1 / option2", ""),
        ("piqa", "answer format: solution1/solution2\nsolution2", "solution2"),
    ],
)
def test_improved_ignores_echoes_of_the_format_line(bench, text, expected):
    assert improved(text, bench) == expected


@pytest.mark.parametrize(
    ("bench", "text", "expected"),
    [
        ("hellaswag", "the woman is talking. Ending1: are talking to the camera. Ending2: are talking to the", ""),
        ("ARC-Easy", "1: the motion stops Answer2: the motion increases Answer3: the motion decreases Answer4", ""),
        ("openbookqa", "The question: which is loudest?\n\nAnswer1: the plastic", ""),
        ("social_i_qa", "Answer1: make a plan Answer2: go home Answer3: find a place", ""),
        ("winogrande", "Option 1: Sarah", "option1"),  # opening with one label and its text is an answer
        ("hellaswag", "ending4: [substeps] If you do not have excel installed", "ending4"),
    ],
)
def test_improved_ignores_recitals_of_the_option_list(bench, text, expected):
    assert improved(text, bench) == expected


@pytest.mark.parametrize(
    ("bench", "text", "options", "expected"),
    [
        ("openbookqa", "the correct answer is answer5", None, ""),  # 4 labels
        ("social_i_qa", "the correct answer is answer4", None, ""),  # 3 labels
        ("ARC-Easy", "the correct answer is answer5", ARC_OPTIONS, ""),  # range from the options
        ("ARC-Easy", "the correct answer is answer5", [*ARC_OPTIONS, "none"], "answer5"),
        ("ARC-Challenge", "answer4", ARC_OPTIONS[:3], ""),
        ("hellaswag", "ending5? No: the correct answer is ending2", None, "ending2"),  # ignored, not a contradiction
        ("winogrande", "option3", None, ""),
        ("piqa", "solution0", None, ""),
    ],
)
def test_improved_ignores_labels_out_of_range(bench, text, options, expected):
    assert improved(text, bench, options) == expected


@pytest.mark.parametrize(
    ("bench", "text", "options", "expected"),
    [
        ("winogrande", "the correct answer is Maria", ["Sarah", "Maria"], "option2"),
        ("ARC-Easy", "ircumstances: days become shorter.", ARC_OPTIONS, "answer3"),
        ("piqa", "Use a bobby pin.", ["Use a bobby pin.", "Use a hammer."], "solution1"),
        (
            "social_i_qa",
            "The answer is: Find somewhere to go",
            ["make a plan", "go home", "find somewhere to go"],
            "answer3",
        ),
        (
            "hellaswag",
            "Starts pulling up roofing",
            ["is using wrap", "rips", "holds a cube", "starts pulling up roofing"],
            "ending4",
        ),
        ("openbookqa", "ice cream", ["ice", "ice cream", "tea", "mud"], "answer2"),  # the longer option wins
        (
            "ARC-Easy",
            "[header] How days become shorter [title] Measure it. [step] First, get a clock.",
            ARC_OPTIONS,
            "",
        ),
        ("winogrande", "Sarah or Maria", ["Sarah", "Maria"], ""),
        ("winogrande", "the correct answer is Maria", None, ""),  # no options, no mapping
    ],
)
def test_improved_maps_option_text_to_its_label(bench, text, options, expected):
    assert improved(text, bench, options) == expected


@pytest.mark.parametrize(
    ("bench", "text"),
    [
        ("ARC-Easy", "the correct answer is answer1 or answer2"),
        ("ARC-Easy", "The correct answer is answer1. The correct answer is answer2."),
        ("piqa", "solution1 solution2"),
        ("boolq", "true and false"),
        ("boolq", "the correct answer is true, false"),
        ("hellaswag", "1: ending1\n 2: ending2\n 3: ending3"),
        ("winogrande", "the correct answer is option1/option2"),
        ("social_i_qa", "answer1, answer2, answer3"),
    ],
)
def test_improved_refuses_contradictions(bench, text):
    assert improved(text, bench) == ""


@pytest.mark.parametrize(
    ("bench", "text"),
    [
        ("ARC-Easy", "Â Â Â Â Â Â Â Â Â Â Â Â Â Â Â Â"),
        ("piqa", "12345678910111213141516171819202"),
        ("openbookqa", "ÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄ"),
        ("social_i_qa", "the correct answer is answer"),
        ("winogrande", "the correct"),
        ("boolq", 'Response.statusCode = 200;\n    Response.contentType = "text/plain";'),
        ("boolq", "yes/no"),
        ("hellaswag", ""),
        ("ARC-Challenge", "the correct answer is not answer2"),
    ],
)
def test_improved_gives_nothing_for_garbage_and_truncation(bench, text):
    assert improved(text, bench) == ""


def test_improved_reads_after_the_last_response_marker_and_skips_negations():
    assert improved("false\n### Response:\n true", "boolq") == "true"
    assert improved("not answer1, answer3", "ARC-Easy") == "answer3"
    assert improved("Surely not the option1. option2", "winogrande") == "option2"


# ---- improved: answers stated in words ----------------------------------------------------------------------

LAYERS = ["the mesosphere", "the stratosphere", "the troposphere", "the thermosphere"]


@pytest.mark.parametrize(
    ("bench", "text", "options", "expected"),
    [
        # the option's text completing the question, then a cut-off echo of the format line
        (
            "ARC-Easy",
            "The layer of the atmosphere we live in is the troposphere. Answer format: answer1/answer2/",
            LAYERS,
            "answer3",
        ),
        (
            "ARC-Easy",
            "ircumstance: The layer we live in is the troposphere. Answer2 Answer3 Answer4",
            LAYERS,
            "answer3",
        ),
        ("ARC-Easy", "ircumstance: the troposphere Answer1/answer2/answer3/answer4", LAYERS, "answer3"),
        ("ARC-Easy", "The troposphere is the answer.", LAYERS, "answer3"),
        (
            "openbookqa",
            "Most plants begin their life cycle as seeds.",
            ["leaves", "flowers", "roots", "seeds"],
            "answer4",
        ),
        ("piqa", "You should use a bobby pin.", ["Use a bobby pin.", "Use a hammer."], "solution1"),
        (
            "hellaswag",
            "the woman starts pulling up roofing",
            ["rips", "holds a cube", "is using wrap", "starts pulling up roofing"],
            "ending4",
        ),
    ],
)
def test_improved_reads_an_option_stated_in_a_sentence(bench, text, options, expected):
    assert improved(text, bench, options) == expected
    assert explain_answer(text, bench, options).rule == "option text"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("Which layer do we live in, the troposphere?", "a question"),
        ("[header] How the troposphere forms [title] Look up. [step] Clouds form there.", "a how-to heading"),
        ("[header] Layers [title] Visit the troposphere. [step] Breathe.", "a how-to step"),
        ("1: the mesosphere Answer2: the stratosphere Answer3: the troposphere", "a recited option list"),
        ("1: the troposphere Answer2: the mesosphere", "a recited list, texts under the wrong numbers"),
        ("ircumstances: the mesosphere Answer2/the stratosphere Answer", "the list after a glued fragment"),
        ("We do not live in the troposphere", "a negated text"),
        ("the troposphere or the mesosphere", "two options offered"),
        ("The troposphere lies below the stratosphere.", "two options stated"),
    ],
)
def test_improved_refuses_option_texts_that_are_no_answer(text, why):
    assert improved(text, "ARC-Easy", LAYERS) == "", why


def test_improved_reads_past_a_negated_option():
    assert improved("not the troposphere, the stratosphere", "ARC-Easy", LAYERS) == "answer2"
    assert improved("We live not in the mesosphere but in the troposphere", "ARC-Easy", LAYERS) == "answer3"


def test_improved_takes_the_longest_of_options_that_contain_each_other():
    options = ["grass", "cut grass", "tall grass trees", "rocks"]
    assert improved("The cow eats cut grass.", "openbookqa", options) == "answer2"
    assert improved("The cow eats grass.", "openbookqa", options) == "answer1"
    assert improved("It hides in tall grass trees", "openbookqa", options) == "answer3"
    assert improved("grassland", "openbookqa", options) == ""  # whole words only


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("quick", "answer2"),  # alone
        ("A predator must be quick.", "answer2"),  # ends the sentence
        ("quick is the answer", "answer2"),
        ("Quick, because rabbits run fast", "answer2"),  # opens the response
        ("A quick look at the big picture", ""),  # one word inside a sentence is an accident
        ("It is big and small", ""),
    ],
)
def test_improved_reads_one_word_options_only_where_they_state_the_answer(text, expected):
    assert improved(text, "openbookqa", ["big", "quick", "slow", "small"]) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("no answer", ""), ("I do not know", ""), ("No.", "answer2"), ("Yes, it was.", "answer1"), ("maybe so", "")],
)
def test_improved_reads_yes_and_no_options_only_where_they_answer(text, expected):
    assert improved(text, "openbookqa", ["yes", "no", "maybe it was", "all of these"]) == expected


def test_yes_and_no_answer_boolq_only():
    """BoolQ asks a yes/no question: "Yes" answers it (true). On other benchmarks yes is only an option's text."""
    assert improved("Yes", "boolq", ["true", "false"]) == "true"
    assert improved("Yes", "ARC-Easy", ARC_OPTIONS) == ""


@pytest.mark.parametrize(
    ("bench", "text", "options", "expected"),
    [
        ("ARC-Easy", "the correct answer is answer2: the troposphere", LAYERS, ""),  # label 2, option 3's text
        ("ARC-Easy", "Answer2: the troposphere", LAYERS, ""),
        ("ARC-Easy", "the correct answer is answer3: the troposphere", LAYERS, "answer3"),
        ("ARC-Easy", "the correct answer is answer3 (the troposphere)", LAYERS, "answer3"),
        ("winogrande", "Option 1: Sarah", ["Sarah", "Maria"], "option1"),
        ("winogrande", "Option 1: Maria", ["Sarah", "Maria"], ""),
    ],
)
def test_improved_refuses_a_label_whose_text_is_another_option(bench, text, options, expected):
    assert improved(text, bench, options) == expected


# ---- improved: enumerations, yes/no, filled sentences, restated questions (answer_forms) ---------------------

PIQA = ["Use the edges to apply toilet tissue to something.", "Use the edges to apply super glue to something."]


@pytest.mark.parametrize(
    ("bench", "text", "options"),
    [
        ("piqa", f"1. {PIQA[0]}\n                2. {PIQA[1][:20]}", PIQA),  # the second entry cut off
        ("piqa", f"a) {PIQA[0]} b) {PIQA[1]}", PIQA),
        ("piqa", f"- {PIQA[0]}\n- {PIQA[1]}", PIQA),
        ("piqa", f"Solution1: {PIQA[0]} Solution2: {PIQA[1]}", PIQA),
        ("ARC-Easy", "1) days become shorter 2) density decreases 3) years", ARC_OPTIONS),
        ("boolq", "1. Yes\n2. No\n3. Yes\n4. No", ["true", "false"]),
        ("boolq", "1. Yes, it is.\n                2. No, it is not.", ["true", "false"]),
        ("ARC-Easy", "Answer: 1. density decreases\n Answer: 2. years become longer\n Answer", ARC_OPTIONS),
        ("ARC-Easy", "Answer: density decreases\n    Answer: years become longer", ARC_OPTIONS),
    ],
)
def test_improved_reads_no_answer_in_an_enumeration_of_the_options(bench, text, options):
    explained = explain_answer(text, bench, options)
    assert (explained.label, explained.rule in ("enumeration", "echo")) == ("", True)


@pytest.mark.parametrize(
    ("bench", "text", "options", "expected"),
    [
        ("boolq", "1. Yes\n2. No\n\nThe answer is: 1. Yes", ["true", "false"], "true"),
        ("boolq", "1. Yes\n2. No\nAnswer: No.", ["true", "false"], "false"),
        ("piqa", f"1. {PIQA[0]}\n2. {PIQA[1]}\nThe answer is: 2. {PIQA[1]}", PIQA, "solution2"),
    ],
)
def test_improved_reads_the_statement_that_picks_an_entry_after_a_list(bench, text, options, expected):
    assert improved(text, bench, options) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes, it is bad to leave a dog in a hot car.", "true"),
        ("No. The film has no sequel.", "false"),
        ("The answer is yes.", "true"),
        ('The answer to the question "Is corn starch the same as corn flour?" is "No, it is not."', "false"),
        ("no answer", ""),
        ("No one knows.", ""),
        ("yes or no", ""),
        ("Yes. No.", ""),  # both: a contradiction
        ("Is it bad? Yes, I think", "true"),
        ("Is it bad? I think so", ""),
    ],
)
def test_improved_reads_boolq_answered_with_yes_or_no(text, expected):
    assert improved(text, "boolq", ["true", "false"]) == expected
    assert improved(text, "boolq") == expected


NAMES = ["Sarah", "Maria"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sarah was a much better surgeon than Maria so Sarah always got the harder cases.", "option1"),
        ("Sarah was a much better surgeon than Maria so Maria always got the easier cases.", "option2"),
        ("Sarah was a much better surgeon than Maria so _ always got the harder cases.", ""),  # the blank kept
        ("Sarah was a much better surgeon than Maria so", ""),  # cut off before the blank
        ("Sarah was better than Maria, not Maria, so Sarah got more.", ""),  # Maria twice, Sarah twice
        ("Sarah was better, but not Maria, so Sarah got more.", "option1"),  # a negated mention is still a mention
        ("Maria was better than Sarah so Maria won.\nMaria was better than", "option2"),  # a cut-off copy after it
    ],
)
def test_improved_reads_winogrande_answered_with_the_filled_sentence(text, expected):
    explained = explain_answer(text, "winogrande", NAMES)
    assert explained.label == expected
    assert explained.rule == ("filled sentence" if expected else explained.rule)


@pytest.mark.parametrize(
    ("bench", "text", "options"),
    [
        ("ARC-Easy", "Question: Why do days become shorter in winter?", ARC_OPTIONS),
        ("ARC-Easy", 'The answer to the question "Why do days become shorter" is', ARC_OPTIONS),
        ("piqa", f"Question: {PIQA[0]}\nAnswer:", PIQA),
        ("winogrande", "Sarah gave the book to _ because she was leaving.", NAMES),
    ],
)
def test_improved_never_reads_an_option_named_only_in_a_restated_question(bench, text, options):
    assert improved(text, bench, options) == ""


def test_improved_reads_the_answer_after_a_quoted_question_that_names_another_option():
    text = 'The answer to the question "Do days become shorter or years become longer" is "density decreases"'
    explained = explain_answer(text, "ARC-Easy", ARC_OPTIONS)
    assert (explained.label, explained.rule) == ("answer1", "option text")


# ---- improved: numbers, glued labels, cut-off runs -------------------------------------------------------------


@pytest.mark.parametrize(
    ("bench", "text", "expected"),
    [
        ("social_i_qa", "3 is the correct answer", "answer3"),
        ("ARC-Easy", "2 is correct", "answer2"),
        ("ARC-Easy", "The correct answer is 2.", "answer2"),
        ("piqa", "Answer: 1", "solution1"),
        ("hellaswag", "the correct ending is number 4", "ending4"),
        ("winogrande", "the answer is 2", "option2"),
        ("openbookqa", "the answer is 5", ""),  # out of range
        ("ARC-Easy", "the correct answer is not 2", ""),
        ("ARC-Easy", "the answer is 2 or answer3", ""),
        ("ARC-Easy", "2:00 p.m. is most likely the correct time", ""),
        ("ARC-Easy", "the answer is 2016-10-25", ""),
        ("ARC-Easy", "the answer is 2.5 grams", ""),
        ("ARC-Easy", "3 answers to the question", ""),
        ("boolq", "1 is the correct answer", ""),  # BoolQ's labels are words
        ("ARC-Easy", "1", ""),  # a bare number is no statement
    ],
)
def test_improved_reads_numbers_stated_as_the_answer(bench, text, expected):
    assert improved(text, bench) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FalseAnswer format:true/false Answer format:true/false", "false"),
        ("TrueAnswerFormat:true/false\n\nAnswer format:true/false", "true"),
        ("TrueAnswer format: true/", "true"),
        ("true/false\n\nAnswer format: true/", ""),
        ("Answer format: format:true/false", ""),
    ],
)
def test_improved_reads_a_label_glued_to_an_echo(text, expected):
    assert improved(text, "boolq") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ircumvented the system Answer11 Answer12 Answer13 Answer14 Answer15 Answer16 Answer17 Answer18 Answer1", ""),
        ("Answer2 Answer3 Answer4", ""),
        ("the skull Answer1 Answer2 Answer3 Answer4\n ### Response", ""),
        ("answer1 answer1", "answer1"),  # the same label twice is one answer
    ],
)
def test_improved_never_reads_a_label_from_a_run_of_labels(text, expected):
    assert improved(text, "ARC-Easy", ARC_OPTIONS) == expected


@pytest.mark.parametrize("options", [[None, "x"], [1, 2], [None, None, None], ["", "x"], [["a"], {"b": 1}]])
def test_options_that_are_not_texts_never_raise(options):
    assert extract_answer("x", "ARC-Easy", options=options) in ("", "answer2")
    assert extract_answer("the correct answer is answer2", "ARC-Easy", options=options) == "answer2"
    assert explain_answer("x", "ARC-Easy", options).rule in RULES


# ---- explain_answer --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bench", "text", "options", "label", "rule", "evidence"),
    [
        (
            "ARC-Easy",
            "I think the correct answer is Answer3.",
            None,
            "answer3",
            "explicit statement",
            "the correct answer is Answer3.",
        ),
        ("ARC-Easy", "3 is the correct answer", None, "answer3", "explicit statement", "3 is the correct answer"),
        ("ARC-Easy", "ANSWER2", None, "answer2", "label", "ANSWER2"),
        (
            "ARC-Easy",
            "We live in the troposphere. Answer format: answer1/",
            LAYERS,
            "answer3",
            "option text",
            "We live in the troposphere. Answer format: answer1",
        ),
        ("ARC-Easy", "answer1 or answer2", None, "", "contradiction", ""),
        ("ARC-Easy", "the troposphere or the mesosphere", LAYERS, "", "contradiction", ""),
        ("hellaswag", "asz123\n\nAnswer format: ending1/ending2/ending3/ending4", None, "", "echo", ""),
        ("ARC-Easy", "1: the mesosphere Answer2: the stratosphere", LAYERS, "", "echo", ""),
        ("openbookqa", "the correct answer is answer5", None, "", "out of range", ""),
        ("ARC-Easy", "answer1 " * 70, None, "", "garbage", ""),
        ("ARC-Easy", "ÂÂÂÂÂÂ", None, "", "no answer", ""),
    ],
)
def test_explain_answer_names_the_rule_and_the_words(bench, text, options, label, rule, evidence):
    explained = explain_answer(text, bench, options)
    assert (explained.label, explained.rule, explained.evidence) == (label, rule, evidence)
    assert improved(text, bench, options) == label


def test_explain_answer_lists_what_it_set_aside():
    explained = explain_answer("not answer1. Answer5? the correct answer is answer2\nAnswer format: a/b", "openbookqa")
    assert explained.label == "answer2"
    assert explained.ignored == ("echo of the format line", "negated: answer1", "out of range: Answer5")
    assert explain_answer("answer1/answer2", "ARC-Easy").ignored == ("echo: answer1", "echo: answer2")


ADVERSARIAL = {
    "spaces after a cue": "the correct answer is" + " " * 1_000_000,
    "dense labels": "answer1 " * 125_000,
    "slash list": "answer1/" * 125_000,
    "option list": "Answer1: " * 111_111,
    "cues": "the correct answer is " * 45_454,
    "numbers after cues": "the answer is 3 " * 62_500,
    "numbers stated": "3 is the correct " * 58_823,
    "digits": "answer" + "9" * 1_000_000,
    "bools": "true " * 200_000,
    "junk": "Â " * 500_000,
    "words": "a b " * 250_000,
    "option texts": "days become shorter. " * 47_619,
    "questions": "why? " * 200_000,
    "late answer": "x" * 1_000_000 + " the correct answer is answer2",
    "list marks": "1. x\n2. y\n" * 100_000,
    "answer then list marks": "the answer is 1. " * 62_500,
    "yes and no": "Yes. No. " * 111_111,
    "quoted questions": 'the question "' * 71_428,
    "blanks": "_ " * 500_000,
    "question lines": "Question: is it true\n" * 50_000,
    "cut-off option": "days become shorter. " + "she begins to brush her " * 40_000,
}


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_improved_is_linear_on_a_megabyte_of_adversarial_text(name):
    text = ADVERSARIAL[name]
    for bench, options in [("ARC-Easy", ARC_OPTIONS), ("boolq", None)]:
        best = min(_seconds(improved, text, bench, options) for _ in range(3))  # best of 3: a busy machine
        assert best < 0.2, (name, bench, best)
    assert improved(ADVERSARIAL["late answer"], "ARC-Easy") == "answer2"


def _seconds(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def test_improved_never_raises_on_random_text():
    """Fuzz: random strings of label-like tokens, option words, digits, cue words and punctuation."""
    pieces = [
        "answer",
        "Answer",
        "1",
        "2",
        "5",
        "12",
        ":",
        "/",
        " ",
        "\n",
        "the correct answer is",
        "not",
        "or",
        "days become shorter",
        "?",
        ".",
        "[title]",
        "Answer format:",
        "ending",
        "true",
        "is the answer",
        "Â",
        "Question:",
        "given sentence:",
        "she begins to brush her",
        "lips and make painted lips",
        "_",
    ]
    endings = ["she begins to brush her lips and make painted lips look", "days become shorter and colder than before"]
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 40)))
        for bench, options in [("ARC-Easy", ARC_OPTIONS), ("boolq", None), ("hellaswag", None), ("hellaswag", endings)]:
            explained = explain_answer(text, bench, options)
            assert explained.label in ("", *get_benchmark(bench).labels) and explained.rule in RULES
            assert original(text, bench) in ("", *get_benchmark(bench).labels)


# ---- dispatch and plugins -------------------------------------------------------------------------------------


def test_extractors_are_registered_through_the_hook():
    registered = plugins.get_answer_extractors()
    assert registered["original"].value is original and registered["improved"].value is improved
    assert {registered[name].plugin for name in ("original", "improved")} == {"dora_plugins.builtin"}
    assert extract_answer("ANSWER3", "ARC-Easy") == "answer3"  # improved is the default
    assert extract_answer("ANSWER3", "ARC-Easy", method="original") == ""


def test_unknown_extractor_is_a_clear_error():
    expected = r"Unknown answer extractor 'improve'. Did you mean 'improved'\? Available: improved, original"
    with pytest.raises(ValueError, match=expected):
        extract_answer("answer1", "ARC-Easy", method="improve")


class _LastWordPlugin:
    @hookimpl
    def dora_answer_extractors(self, register):
        register("last_word", lambda text, benchmark, options: text.split()[-1], "the last word")


def test_extract_answer_uses_extractors_from_plugins():
    pm = get_plugin_manager()
    pm.register(_LastWordPlugin(), name="last-word-plugin")
    try:
        assert extract_answer("so: option2", "winogrande", method="last_word") == "option2"
        assert plugins.get_answer_extractors()["last_word"].plugin == "last-word-plugin"
    finally:
        pm.unregister(name="last-word-plugin")


def test_plugin_benchmarks_work_with_both_extractors():
    from dora_plugins.benchmarks import Benchmark

    class QuizPlugin:
        @hookimpl
        def dora_benchmarks(self, register):
            register(Benchmark("quiz", "yes/no quiz", ("yes", "no"), "me/quiz", None, "test", dict))

    pm = get_plugin_manager()
    pm.register(QuizPlugin(), name="quiz-plugin")
    try:
        assert original("I say yes", "quiz") == "yes"
        assert improved("YES!", "quiz") == "yes"
        assert improved("yes or no", "quiz") == ""
    finally:
        pm.unregister(name="quiz-plugin")
    with pytest.raises(ValueError, match="Unknown benchmark 'quiz'"):
        improved("yes", "quiz")


LAYERS_README = ["the mesosphere", "the stratosphere", "the troposphere", "the thermosphere"]


def test_readme_extractor_examples():
    echo = "asz123456789\n\nAnswer format: ending1/ending2/ending3/ending4"
    assert extract_answer("ANSWER3", "ARC-Easy") == "answer3"
    assert extract_answer("ANSWER3", "ARC-Easy", method="original") == ""
    assert extract_answer("the correct answer is Maria", "winogrande", options=["Sarah", "Maria"]) == "option2"
    assert extract_answer(echo, "hellaswag") == ""
    assert extract_answer(echo, "hellaswag", method="original") == "ending1"
    explained = explain_answer("We live in the troposphere. Answer format: answer1/", "ARC-Easy", options=LAYERS_README)
    assert explained == Explanation(
        "answer3", "option text", "We live in the troposphere. Answer format: answer1", ("echo of the format line",)
    )


def test_improved_treats_a_flood_of_labels_as_garbage():
    assert improved("answer1 " * 3, "ARC-Easy") == "answer1"
    assert improved("answer1 " * 65, "ARC-Easy") == ""  # more label-like tokens than any answer has
    assert improved("the correct answer is " + "Maria " * 40, "winogrande", ["Sarah", "Maria"]) == ""
