"""Answer extractors: the paper's ``original`` on every real row; ``improved`` rule by rule and on real rows."""

from __future__ import annotations

import json
import re
import time
from functools import cache
from pathlib import Path

import pytest
from conftest import SHARED_DATA

from dora_plugins import get_plugin_manager, plugins
from dora_plugins.benchmarks import get_benchmark, load_llm_adapters, options_from_instruction
from dora_plugins.extract import extract_answer, improved, original
from dora_plugins.hookspecs import hookimpl

GENERATIONS = sorted((SHARED_DATA / "generations").glob("*.jsonl"))
ARC_OPTIONS = ["density decreases", "years become longer", "days become shorter", "gravity becomes stronger"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@cache
def _options(benchmark: str) -> list[list[str]] | None:
    folder = SHARED_DATA / "llm_adapters"
    return [item["options"] for item in load_llm_adapters(folder, benchmark)] if (folder / benchmark).is_dir() else None


def _row_options(row: dict) -> list[str]:
    options = _options(row["benchmark"])
    return options[row["index"]] if options else options_from_instruction(row["instruction"])


def test_generation_files_are_all_there():
    assert len(GENERATIONS) == 37
    assert sum(len(_rows(path)) for path in GENERATIONS) == 62391


@pytest.mark.parametrize("path", GENERATIONS, ids=lambda p: p.stem)
def test_original_extractor_matches_paper_on_real_rows(path):
    for row in _rows(path):
        assert original(row["output_pred"], row["benchmark"]) == row["pred"], row


def _stated_answer(row: dict, in_range: tuple[str, ...], all_labels: tuple[str, ...]) -> str | None:
    """X when the text says 'the correct answer is X' (any case) for one in-range X and names no other label."""
    text = row["output_pred"].lower()
    stated = set(re.findall(r"the correct answer is (\w+)", text)) & set(in_range)
    named = {label for label in all_labels if re.search(rf"(?<![a-z0-9]){label}(?![a-z0-9])", text)}
    return stated.pop() if len(stated) == 1 and named == stated else None


def test_improved_reads_every_explicit_answer_in_real_rows():
    checked = 0
    for path in GENERATIONS:
        for row in _rows(path):
            labels = get_benchmark(row["benchmark"]).labels
            options = _row_options(row)
            in_range = labels[: len(options)] if row["benchmark"] != "boolq" else labels
            expected = _stated_answer(row, in_range, labels)
            if expected is not None:
                checked += 1
                assert improved(row["output_pred"], row["benchmark"], options) == expected, row
    assert checked > 50_000


def test_improved_refuses_the_format_echoes_that_original_credits():
    path = SHARED_DATA / "generations" / "Dora-coursework__LLaMA-7B-DoRA__earlier__hellaswag.jsonl"
    echo = (
        "asz123456789\n\nAnswer format: ending1/ending2/ending3/ending4\n                \n                ### Response"
    )
    rows = [row for row in _rows(path) if row["output_pred"] == echo]
    assert len(rows) == 564
    assert {original(row["output_pred"], "hellaswag") for row in rows} == {"ending1"}
    assert {improved(row["output_pred"], "hellaswag", _row_options(row)) for row in rows} == {""}


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
        ("boolq", "Yes"),
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


ADVERSARIAL = {
    "spaces after a cue": "the correct answer is" + " " * 1_000_000,
    "dense labels": "answer1 " * 125_000,
    "slash list": "answer1/" * 125_000,
    "option list": "Answer1: " * 111_111,
    "cues": "the correct answer is " * 45_454,
    "digits": "answer" + "9" * 1_000_000,
    "bools": "true " * 200_000,
    "junk": "Â " * 500_000,
    "words": "a b " * 250_000,
    "late answer": "x" * 1_000_000 + " the correct answer is answer2",
}


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_improved_is_linear_on_a_megabyte_of_adversarial_text(name):
    text = ADVERSARIAL[name]
    for bench, options in [("ARC-Easy", ARC_OPTIONS), ("boolq", None)]:
        start = time.perf_counter()
        improved(text, bench, options)
        assert time.perf_counter() - start < 0.2, (name, bench)
    assert improved(ADVERSARIAL["late answer"], "ARC-Easy") == "answer2"


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


def test_readme_extractor_examples():
    echo = "asz123456789\n\nAnswer format: ending1/ending2/ending3/ending4"
    assert extract_answer("ANSWER3", "ARC-Easy") == "answer3"
    assert extract_answer("ANSWER3", "ARC-Easy", method="original") == ""
    assert extract_answer("the correct answer is Maria", "winogrande", options=["Sarah", "Maria"]) == "option2"
    assert extract_answer(echo, "hellaswag") == ""
    assert extract_answer(echo, "hellaswag", method="original") == "ending1"


def test_improved_treats_a_flood_of_labels_as_garbage():
    assert improved("answer1 " * 3, "ARC-Easy") == "answer1"
    assert improved("answer1 " * 65, "ARC-Easy") == ""  # more label-like tokens than any answer has
    assert improved("the correct answer is " + "Maria " * 40, "winogrande", ["Sarah", "Maria"]) == ""
