"""HF rows -> LLM-Adapters instructions, byte for byte; LLM-Adapters files; the benchmark hook; bad data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import REPO, SHARED_DATA, requires_shared_data, shared_files

from dora_plugins import get_plugin_manager, plugins
from dora_plugins.benchmarks import (
    BENCHMARKS,
    Benchmark,
    DataError,
    from_hf,
    load_llm_adapters,
    options_from_instruction,
)
from dora_plugins.hookspecs import hookimpl

DEMO_DATA = REPO / "dora_plugins" / "demo_data" / "eval"  # 40 real items per benchmark, shipped with the package
WITH_HF_FILE = ["boolq", "piqa", "social_i_qa", "winogrande", "ARC-Easy", "ARC-Challenge", "openbookqa"]
HELLASWAG_ROW = {
    "activity_label": "Roof shingle removal",
    "ctx_a": "A man is sitting on a roof.",
    "ctx_b": "he",
    "ctx": "A man is sitting on a roof. he",
    "endings": ["is using wrap.", "is ripping level tiles off.", "is holding a cube.", "starts pulling up roofing."],
    "label": "3",
}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@requires_shared_data
@pytest.mark.parametrize("name", WITH_HF_FILE)
def test_from_hf_reproduces_every_llm_adapters_item_in_order(name):
    rows = _jsonl(SHARED_DATA / "hf" / f"{name}.jsonl")
    gold = json.loads((SHARED_DATA / "llm_adapters" / name / "test.json").read_text(encoding="utf-8"))
    assert len(rows) == len(gold)
    items = [from_hf(name, row, index=i) for i, row in enumerate(rows)]
    assert [item["instruction"] for item in items] == [g["instruction"] for g in gold]
    assert [item["answer"] for item in items] == [g["answer"] for g in gold]
    # the options are the listed texts, in label order, and parse back out of the instruction
    assert [[o.strip() for o in item["options"]] for item in items] == [
        options_from_instruction(g["instruction"]) for g in gold
    ]


def test_hellaswag_instruction_from_a_hand_made_hf_row():
    item = from_hf("hellaswag", HELLASWAG_ROW)
    assert item["instruction"] == (
        "Please choose the correct ending to complete the given sentence: Roof shingle removal: A man is sitting on a "
        "roof. he\n\nEnding1: is using wrap. Ending2: is ripping level tiles off. Ending3: is holding a cube. "
        "Ending4: starts pulling up roofing.\n\nAnswer format: ending1/ending2/ending3/ending4"
    )
    assert item["answer"] == "ending4"
    assert item["options"] == HELLASWAG_ROW["endings"]


def test_hellaswag_keeps_the_raw_ctx_with_bracket_tags():
    row = {**HELLASWAG_ROW, "ctx": "[header] How to x. [title] Get y. [step] You", "label": 0}
    item = from_hf("hellaswag", row)
    assert ": [header] How to x. [title] Get y. [step] You\n\nEnding1: " in item["instruction"]
    assert item["answer"] == "ending1"


def _hellaswag_row_from_instruction(instruction: str, answer: str) -> dict:
    """Undo the documented rule on a real LLM-Adapters instruction (split at the first ': ')."""
    head, rest = instruction.removeprefix("Please choose the correct ending to complete the given sentence: ").split(
        "\n\nEnding1: ", 1
    )
    activity_label, ctx = head.split(": ", 1)
    endings = re.fullmatch(r"(.*) Ending2: (.*) Ending3: (.*) Ending4: (.*)\n\nAnswer format: \S+", rest, re.S).groups()
    return {"activity_label": activity_label, "ctx": ctx, "endings": list(endings), "label": str(int(answer[-1]) - 1)}


@requires_shared_data
def test_hellaswag_rule_rebuilds_the_real_instructions():
    rows = [row for path in shared_files("generations/*hellaswag*.jsonl") for row in _jsonl(path)]
    assert len(rows) == 3792 + 983
    assert sum("[header]" in row["instruction"] for row in rows) > 100  # raw ctx, tags kept
    for row in rows:
        item = from_hf("hellaswag", _hellaswag_row_from_instruction(row["instruction"], row["answer"]))
        assert (item["instruction"], item["answer"]) == (row["instruction"], row["answer"])
        assert [o.strip() for o in item["options"]] == options_from_instruction(row["instruction"])


def test_builtin_benchmarks_are_registered_through_the_hook():
    registered = plugins.get_benchmarks()
    names = ["boolq", "piqa", "social_i_qa", "hellaswag", "winogrande", "ARC-Easy", "ARC-Challenge", "openbookqa"]
    assert [b.name for b in BENCHMARKS] == names
    assert set(registered) == set(names)
    for benchmark in BENCHMARKS:
        assert registered[benchmark.name].value is benchmark
        assert registered[benchmark.name].plugin == "dora_plugins.builtin"
        assert registered[benchmark.name].description == benchmark.description
    assert registered["ARC-Easy"].value.labels == ("answer1", "answer2", "answer3", "answer4", "answer5")
    assert registered["boolq"].value.labels == ("true", "false")
    assert (registered["winogrande"].value.hf_path, registered["winogrande"].value.hf_name) == (
        "allenai/winogrande",
        "winogrande_xl",
    )


def test_each_benchmark_names_its_lm_eval_tasks_and_its_column_of_the_paper():
    names = {b.name: (b.task, b.mc_task, b.title) for b in BENCHMARKS}
    assert names["social_i_qa"] == ("dora_siqa", "dora_siqa_mc", "SIQA")
    assert names["ARC-Easy"] == ("dora_arc_easy", "dora_arc_easy_mc", "ARC-e")
    assert len({task for task, _, _ in names.values()}) == len({title for _, _, title in names.values()}) == 8


def test_a_benchmark_without_task_or_title_has_none_and_is_titled_by_its_name():
    quiz = Benchmark("quiz", "A plugin benchmark", ("yes", "no"), "me/quiz", None, "test", dict)
    assert (quiz.task, quiz.mc_task, quiz.title) == ("", "", "quiz")


class _QuizPlugin:
    @hookimpl
    def dora_benchmarks(self, register):
        register(
            Benchmark(
                "quiz", "A plugin benchmark", ("yes", "no"), "me/quiz", None, "test",
                lambda row: {"instruction": f"Q: {row['q']}", "answer": row["a"], "options": ["yes", "no"]},
            )
        )  # fmt: skip


def test_from_hf_finds_benchmarks_from_plugins():
    pm = get_plugin_manager()
    pm.register(_QuizPlugin(), name="quiz-plugin")
    try:
        assert from_hf("quiz", {"q": "up?", "a": "yes"}) == {
            "instruction": "Q: up?",
            "answer": "yes",
            "options": ["yes", "no"],
        }
        assert plugins.get_benchmarks()["quiz"].plugin == "quiz-plugin"
    finally:
        pm.unregister(name="quiz-plugin")
    with pytest.raises(DataError, match="Unknown benchmark 'quiz'"):
        from_hf("quiz", {"q": "up?", "a": "yes"})


def test_unknown_benchmark_suggests_the_close_name():
    with pytest.raises(DataError) as info:
        from_hf("arc-easy", {})
    message = str(info.value)
    assert "Unknown benchmark 'arc-easy'. Did you mean 'ARC-Easy'?" in message
    assert "Available: ARC-Challenge, ARC-Easy, boolq" in message


@pytest.mark.parametrize(
    ("name", "row", "field"),
    [
        ("boolq", {"question": "is it", "passage": "p"}, "'label'"),
        ("piqa", {"goal": "g", "sol1": "a", "label": 0}, "'sol2'"),
        ("social_i_qa", {"context": "c", "question": "q", "answerA": "a", "answerB": "b", "label": "1"}, "'answerC'"),
        ("hellaswag", {"activity_label": "a", "endings": ["x"] * 4, "label": "0"}, "'ctx'"),
        ("winogrande", {"sentence": "s", "option1": "a", "option2": "b"}, "'answer'"),
        ("ARC-Easy", {"id": "1", "question": "q", "answerKey": "A"}, "'choices'"),
        (
            "openbookqa",
            {"question": "q", "choices": {"text": ["a"], "label": ["A"]}, "answerKey": "A"},
            "'question_stem'",
        ),
    ],
)
def test_from_hf_names_benchmark_row_and_missing_field(name, row, field):
    with pytest.raises(DataError) as info:
        from_hf(name, row, index=17)
    message = str(info.value)
    assert message.startswith(f"{name}: row 17 has no field {field}. Rows must follow the schema of")
    assert "this row has:" in message


def test_from_hf_rejects_an_answer_key_outside_the_choices():
    row = {"question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "E"}
    with pytest.raises(DataError, match=r"ARC-Challenge: a row is invalid: ValueError: answerKey 'E' is not one of"):
        from_hf("ARC-Challenge", row)


def test_hellaswag_rule_rebuilds_the_bundled_real_instructions():
    # The 40 HellaSwag items that ship with the package were logged by the paper's evaluation script.
    items = load_llm_adapters(DEMO_DATA, "hellaswag")
    assert len(items) == 40
    for item in items:
        row = _hellaswag_row_from_instruction(item["instruction"], item["answer"])
        assert from_hf("hellaswag", row)["instruction"] == item["instruction"]


@requires_shared_data
def test_load_llm_adapters_reads_the_real_file_with_options():
    items = load_llm_adapters(SHARED_DATA / "llm_adapters", "social_i_qa")
    assert len(items) == 1954
    assert set(items[0]) == {"instruction", "input", "output", "answer", "options"}
    assert items[0]["options"] == ["make a new plan", "Go home and see Riley", "Find somewhere to go"]
    assert load_llm_adapters(str(SHARED_DATA / "llm_adapters"), "boolq")[0]["options"] == ["true", "false"]
    assert load_llm_adapters(SHARED_DATA / "llm_adapters", "piqa")[1]["options"] == [
        "replace drawer with bobby pin",
        "finish, woodgrain with  bobby pin",
    ]
    assert load_llm_adapters(SHARED_DATA / "llm_adapters", "winogrande")[0]["options"] == ["Sarah", "Maria"]


def test_options_from_instruction_without_a_list_is_empty():
    assert options_from_instruction("What is 2+2?") == []
    assert options_from_instruction("Pick.\n\nAnswer format: answer1/answer2") == []


def _write(tmp_path: Path, content: str) -> Path:
    (tmp_path / "boolq").mkdir()
    (tmp_path / "boolq" / "test.json").write_text(content, encoding="utf-8")
    return tmp_path


def test_load_llm_adapters_missing_folder(tmp_path):
    with pytest.raises(DataError, match=r"Data folder '.*nowhere' does not exist.*boolq/test.json"):
        load_llm_adapters(tmp_path / "nowhere", "boolq")


def test_load_llm_adapters_missing_file_lists_what_is_there(tmp_path):
    _write(tmp_path, "[]")
    with pytest.raises(DataError, match=r"No file .*piqa[/\\]test.json.*Folders with a test.json: boolq"):
        load_llm_adapters(tmp_path, "piqa")


def test_load_llm_adapters_not_json(tmp_path):
    _write(tmp_path, "{not json")
    with pytest.raises(DataError, match=r"boolq[/\\]test.json is not valid JSON"):
        load_llm_adapters(tmp_path, "boolq")


def test_load_llm_adapters_not_a_list(tmp_path):
    _write(tmp_path, '{"instruction": "x"}')
    with pytest.raises(DataError, match=r"test.json holds a JSON dict, not a list of records"):
        load_llm_adapters(tmp_path, "boolq")


def test_load_llm_adapters_names_file_record_and_field(tmp_path):
    good = {"instruction": "q", "input": "", "output": "the correct answer is true", "answer": "true"}
    _write(tmp_path, json.dumps([good, {k: v for k, v in good.items() if k != "answer"}]))
    with pytest.raises(DataError, match=r"boolq[/\\]test.json: record 1 has no field 'answer'"):
        load_llm_adapters(tmp_path, "boolq")
