"""The dora_* and dora_*_mc lm-eval tasks: indexed, the paper's prompt and generation settings, data, filters, groups.

The tasks read the 40 real items per benchmark that ship with the package (``dora_plugins/demo_data/eval``,
an LLM-Adapters ``data_dir``); the checks over every item of the real corpora need ``../shared/data``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import REPO, SHARED_DATA, requires_shared_data, shared_files
from lm_eval.tasks import TaskManager

from dora_plugins.benchmarks import BENCHMARKS, DataError, get_benchmark, load_llm_adapters, options_from_instruction
from dora_plugins.extract import extract_answer
from dora_plugins.prompts import eval_prompt
from lm_eval_tasks import discovery, utils

DEMO_DATA = REPO / "dora_plugins" / "demo_data" / "eval"  # 40 real items per benchmark (ODC-By, see its README)
LLM_ADAPTERS = SHARED_DATA / "llm_adapters"
TASKS = {b.task: b.name for b in BENCHMARKS}  # dora_siqa -> social_i_qa
MC_TASKS = {b.mc_task: b.name for b in BENCHMARKS}  # dora_siqa_mc -> social_i_qa
TEXT_TASKS = {b.text_task: b.name for b in BENCHMARKS}  # dora_siqa_text -> social_i_qa
GROUPS = ["dora_commonsense", "dora_commonsense_mc", "dora_commonsense_text"]
WITH_SHARED_FILES = [b.name for b in BENCHMARKS if b.name != "hellaswag"]  # ../shared/data has no HellaSwag file
PAPER_GEN_KWARGS = {"until": [], "num_beams": 4, "do_sample": False, "max_gen_toks": 32}


def read_items(data_dir, benchmark: str) -> list[dict]:
    return json.loads((data_dir / benchmark / "test.json").read_text())


@pytest.fixture(scope="module")
def task_manager():
    """Our folder only (lm-eval's own tasks are not needed here), reading the bundled items."""
    return TaskManager(include_defaults=False, include_path=discovery.TASK_DIR, metadata={"data_dir": str(DEMO_DATA)})


@pytest.fixture(scope="module")
def loaded(task_manager):
    return task_manager.load(GROUPS)


def test_benchmarks_name_the_eight_tasks_and_columns_of_the_paper():
    assert list(TASKS) == ["dora_boolq", "dora_piqa", "dora_siqa", "dora_hellaswag", "dora_winogrande",
                           "dora_arc_easy", "dora_arc_challenge", "dora_openbookqa"]  # fmt: skip
    assert [b.title for b in BENCHMARKS] == ["BoolQ", "PIQA", "SIQA", "HellaSwag", "WinoGrande", "ARC-e", "ARC-c",
                                             "OBQA"]  # fmt: skip
    assert list(MC_TASKS) == [f"{task}_mc" for task in TASKS]
    assert list(TEXT_TASKS) == [f"{task}_text" for task in TASKS]


def test_every_task_and_both_groups_are_indexed(task_manager):
    # lm-eval skips a YAML it cannot parse without a word: all twenty-seven names must be there.
    assert sorted(task_manager.all_groups) == GROUPS
    assert sorted(task_manager.all_subtasks) == sorted([*TASKS, *MC_TASKS, *TEXT_TASKS])
    for name in [*TASKS, *MC_TASKS, *TEXT_TASKS, *GROUPS]:
        assert os.path.dirname(task_manager.task_index[name].yaml_path) == discovery.TASK_DIR


def test_each_task_reads_the_benchmark_that_names_it(loaded):
    for tasks in (TASKS, MC_TASKS, TEXT_TASKS):
        for task_name, benchmark in tasks.items():
            assert loaded["tasks"][task_name].config.dataset_kwargs == {"benchmark": benchmark}


@pytest.mark.parametrize(("group_name", "tasks", "metrics"), [
    ("dora_commonsense", TASKS, ["acc,improved", "acc,original"]),
    ("dora_commonsense_mc", MC_TASKS, ["acc,none", "acc_norm,none"]),
    ("dora_commonsense_text", TEXT_TASKS, ["acc,none", "acc_norm,none"]),
])  # fmt: skip
def test_group_is_the_plain_mean_of_the_eight_tasks(loaded, group_name, tasks, metrics):
    group = loaded["groups"][group_name]
    assert group.child_names == list(tasks)
    # The paper's "Avg." is the mean of the eight accuracies, whatever the size of each test set.
    sizes = [3270, 1838, 1954, 10042, 1267, 2376, 1172, 500]
    first = [0.70, 0.80, 0.75, 0.60, 0.65, 0.80, 0.65, 0.70]
    second = [0.72, 0.81, 0.76, 0.66, 0.66, 0.81, 0.66, 0.71]
    results = {
        task: {metrics[0]: a, metrics[1]: b, "sample_len": n}
        for task, a, b, n in zip(tasks, first, second, sizes, strict=True)
    }
    aggregated = group.aggregate(results)
    assert aggregated[metrics[0]] == pytest.approx(sum(first) / 8)
    assert aggregated[metrics[1]] == pytest.approx(sum(second) / 8)


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_task_sends_the_paper_prompt_with_the_paper_generation_settings(loaded, task_name):
    task = loaded["tasks"][task_name]
    assert task.OUTPUT_TYPE == "generate_until"
    # Beam search 4, no sampling, 32 new tokens, and no stop string: lm-eval adds only EOS.
    assert task.config.generation_kwargs == PAPER_GEN_KWARGS
    assert [f.name for f in task._filters] == ["improved", "original"]
    docs, items = list(task.test_docs()), read_items(DEMO_DATA, TASKS[task_name])
    assert len(docs) == len(items) == 40
    assert [d["instruction"] for d in docs] == [i["instruction"] for i in items]
    assert [d["answer"] for d in docs] == [i["answer"] for i in items]
    assert task.doc_to_text(docs[0]) == eval_prompt(items[0]["instruction"])
    assert task.doc_to_target(docs[0]) == items[0]["answer"]


def _choice_requests(loaded, task_name: str, benchmark: str):
    """(task, doc, item, (context, continuation) per choice) for each item of a log-likelihood task, after the
    checks the label-word and option-text groups share."""
    task = loaded["tasks"][task_name]
    assert task.OUTPUT_TYPE == "multiple_choice"
    assert [m["metric"] for m in task.config.metric_list] == ["acc", "acc_norm"]
    items = read_items(DEMO_DATA, benchmark)
    docs = list(task.test_docs())
    assert [d["instruction"] for d in docs] == [i["instruction"] for i in items]
    for doc, item in zip(docs, items, strict=True):
        requests = task.construct_requests(doc, task.doc_to_text(doc))
        yield task, doc, item, [request.arguments for request in requests]


@pytest.mark.parametrize("task_name", sorted(MC_TASKS))
def test_mc_task_scores_the_trained_answer_of_each_label_after_the_paper_prompt(loaded, task_name):
    for task, doc, item, pairs in _choice_requests(loaded, task_name, MC_TASKS[task_name]):
        assert len(pairs) == len(doc["options"])
        assert {context for context, _ in pairs} == {eval_prompt(item["instruction"])}
        context, gold = pairs[task.doc_to_target(doc)]
        # The gold continuation is LLM-Adapters' own "output" of the item, right after the 16-space indent.
        assert context + gold == eval_prompt(item["instruction"]) + item["output"]


@pytest.mark.parametrize("task_name", sorted(TEXT_TASKS))
def test_text_task_scores_each_options_text_after_the_paper_prompt(loaded, task_name):
    for task, doc, item, pairs in _choice_requests(loaded, task_name, TEXT_TASKS[task_name]):
        assert {context for context, _ in pairs} == {eval_prompt(item["instruction"])}
        assert [continuation for _, continuation in pairs] == options_from_instruction(item["instruction"])
        # The gold continuation is the text of the option whose label is the item's answer.
        labels = get_benchmark(TEXT_TASKS[task_name]).labels
        assert pairs[task.doc_to_target(doc)][1] == doc["options"][labels.index(item["answer"])]


def test_text_choices_are_the_option_texts_and_boolq_scores_true_and_false():
    doc = {"benchmark": "ARC-Easy", "instruction": "q", "answer": "answer3", "options": ["red", "green", "blue"]}
    assert utils.doc_to_option_texts(doc) == ["red", "green", "blue"] and utils.doc_to_target_index(doc) == 2
    boolq = {"benchmark": "boolq", "instruction": "q", "answer": "false", "options": ["true", "false"]}
    assert utils.doc_to_option_texts(boolq) == ["true", "false"] and utils.doc_to_target_index(boolq) == 1
    with pytest.raises(DataError, match="ARC-Easy: the item 'q' lists 3 options and answers 'answer4'"):
        utils.doc_to_option_texts({**doc, "answer": "answer4"})


def test_mc_choices_follow_the_number_of_options_of_each_item():
    doc = {"benchmark": "ARC-Easy", "instruction": "q", "answer": "answer3", "options": ["a", "b", "c"]}
    assert utils.doc_to_choice(doc) == [f"the correct answer is answer{i}" for i in (1, 2, 3)]
    assert utils.doc_to_target_index(doc) == 2
    five = {**doc, "answer": "answer5", "options": list("abcde")}
    assert utils.doc_to_choice(five)[-1] == "the correct answer is answer5" and utils.doc_to_target_index(five) == 4
    boolq = {"benchmark": "boolq", "instruction": "q", "answer": "false", "options": ["true", "false"]}
    assert utils.doc_to_choice(boolq) == ["the correct answer is true", "the correct answer is false"]
    assert utils.doc_to_target_index(boolq) == 1


@pytest.mark.parametrize("doc", [
    {"benchmark": "ARC-Easy", "instruction": "Pick one", "answer": "answer4", "options": ["a", "b", "c"]},
    {"benchmark": "ARC-Easy", "instruction": "No list", "answer": "answer1", "options": []},
])  # fmt: skip
def test_mc_item_whose_answer_is_not_among_its_options_names_the_item(doc):
    with pytest.raises(DataError, match=rf"ARC-Easy: the item '{doc['instruction']}' lists {len(doc['options'])} "):
        utils.doc_to_choice(doc)


@requires_shared_data
@pytest.mark.parametrize("name", WITH_SHARED_FILES)
def test_mc_gold_continuation_is_the_llm_adapters_output_of_every_item(name):
    for i, item in enumerate(load_llm_adapters(LLM_ADAPTERS, name)):
        doc = {"benchmark": name, **item}
        assert utils.doc_to_choice(doc)[utils.doc_to_target_index(doc)] == item["output"], f"{name} item {i}"
        assert len(utils.doc_to_choice(doc)) == len(item["options"])


def test_eval_prompt_is_byte_for_byte_the_papers():
    prompt = utils.doc_to_text({"instruction": "Q?\n\nAnswer format: true/false"})
    assert prompt == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request. "
        "\n\n                ### Instruction:\n                Q?\n\nAnswer format: true/false\n\n"
        "                ### Response:\n                "
    )


@requires_shared_data
@pytest.mark.parametrize("name", WITH_SHARED_FILES)
def test_hf_rows_give_the_same_docs_as_the_llm_adapters_file(name):
    # The default data path (canonical HF rows -> from_hf) and data_dir must give the same docs, in order.
    hf_rows = [json.loads(line) for line in (SHARED_DATA / "hf" / f"{name}.jsonl").read_text().splitlines()]
    from_hf = utils.docs_from_hf(name, hf_rows)
    from_file = utils.load_docs(name, data_dir=str(LLM_ADAPTERS))["test"]
    assert len(from_hf) == len(from_file)
    for i, (a, b) in enumerate(zip(from_hf, from_file, strict=True)):
        assert (a["instruction"], a["answer"]) == (b["instruction"], b["answer"]), f"{name} item {i}"
        assert [o.strip() for o in a["options"]] == b["options"], f"{name} item {i}"


def test_load_docs_ignores_the_other_metadata_lm_eval_passes():
    # lm-eval passes the whole task metadata (version, model args, ...) next to data_dir.
    docs = utils.load_docs("hellaswag", data_dir=str(DEMO_DATA), version=1.0, pretrained="m", peft="a")
    assert docs["test"]["answer"][:3] == ["ending4", "ending4", "ending3"]
    assert docs["test"][1]["options"][1] == "pulls the barbell forward."


def test_missing_data_folder_and_file_are_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        utils.load_docs("boolq", data_dir=str(tmp_path / "nowhere"))
    (tmp_path / "piqa").mkdir()
    (tmp_path / "piqa" / "test.json").write_text("[]")
    with pytest.raises(DataError, match=r"boolq/test\.json") as err:
        utils.load_docs("boolq", data_dir=str(tmp_path))
    assert "piqa" in str(err.value)  # and it says which benchmarks the folder does have


def test_empty_test_file_is_named_instead_of_an_index_error(tmp_path):
    (tmp_path / "boolq").mkdir()
    (tmp_path / "boolq" / "test.json").write_text("[]")
    with pytest.raises(DataError, match=rf"^{tmp_path}/boolq/test\.json holds no items \(an empty list\)"):
        utils.load_docs("boolq", data_dir=str(tmp_path))


def test_record_without_a_field_names_the_file_and_the_field(tmp_path):
    (tmp_path / "boolq").mkdir()
    (tmp_path / "boolq" / "test.json").write_text(json.dumps([{"instruction": "q", "input": "", "output": "o"}]))
    with pytest.raises(DataError, match=r"boolq/test\.json.*'answer'"):
        utils.load_docs("boolq", data_dir=str(tmp_path))


def run_load_docs(code: str, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DORA_DEBUG": "", **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_unreachable_hugging_face_dataset_prints_one_message_that_says_to_use_data_dir():
    result = run_load_docs("from lm_eval_tasks import utils; utils.load_docs('boolq')")
    assert result.returncode == 1
    source = "aps/super_glue (boolq, validation)"
    first, hint = result.stderr.splitlines()  # the message and the hint, no traceback
    assert first.startswith(f"lm_eval: error: boolq: could not load the Hugging Face dataset {source}: ")
    assert first.endswith('--metadata \'{"data_dir": "/path/to/dataset"}\'')
    assert hint == "(dora-plugins task; set DORA_DEBUG=1 to see the traceback)"
    debug = run_load_docs("from lm_eval_tasks import utils; utils.load_docs('boolq')", DORA_DEBUG="1")
    assert "Traceback" in debug.stderr and f"DataError: boolq: could not load the Hugging Face dataset {source}" in (
        debug.stderr
    )


def test_other_errors_keep_their_traceback():
    result = run_load_docs("from lm_eval_tasks import utils; utils.load_docs('boolq', data_dir=1)")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and result.stderr.strip().splitlines()[-1].startswith("TypeError")


@requires_shared_data
@pytest.mark.parametrize("method", ["improved", "original"])
def test_filter_applies_the_extractor_with_each_docs_benchmark_and_options(method):
    from lm_eval_tasks.filters import ExtractAnswer

    rows = [json.loads(line) for f in shared_files("generations/*final*.jsonl")
            for line in f.read_text().splitlines()[:40]]  # fmt: skip
    items = {b: load_llm_adapters(LLM_ADAPTERS, b) for b in WITH_SHARED_FILES}
    docs = [{"benchmark": r["benchmark"], "options": items[r["benchmark"]][r["index"]]["options"]} for r in rows]
    resps = [[r["output_pred"]] for r in rows]
    filtered = ExtractAnswer(method=method).apply(resps, docs)
    pairs = zip(rows, docs, strict=True)
    expected = [[extract_answer(r["output_pred"], d["benchmark"], method, d["options"])] for r, d in pairs]
    assert filtered == expected
    if method == "original":  # the paper's extractor gives the paper's recorded predictions
        assert [f[0] for f in filtered] == [r["pred"] for r in rows]


def test_acc_compares_the_extracted_label_with_the_answer():
    assert utils.process_results({"answer": "ending2"}, ["ending2"]) == {"acc": 1.0}
    assert utils.process_results({"answer": "ending2"}, ["ending3"]) == {"acc": 0.0}
    assert utils.process_results({"answer": "ending2"}, [""]) == {"acc": 0.0}
