"""The dora_* lm-eval tasks: indexed, the paper's prompt and generation settings, data, filters, group."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, SHARED_DATA
from lm_eval.tasks import TaskManager

from dora_plugins.benchmarks import DataError, load_llm_adapters
from dora_plugins.extract import extract_answer
from dora_plugins.prompts import eval_prompt
from lm_eval_tasks import discovery, utils

LLM_ADAPTERS = SHARED_DATA / "llm_adapters"
HELLASWAG_FIXTURE = REPO / "tests" / "lm_eval_data"  # hand-made items in LLM-Adapters' format
TASKS = {
    "dora_boolq": "boolq",
    "dora_piqa": "piqa",
    "dora_siqa": "social_i_qa",
    "dora_hellaswag": "hellaswag",
    "dora_winogrande": "winogrande",
    "dora_arc_easy": "ARC-Easy",
    "dora_arc_challenge": "ARC-Challenge",
    "dora_openbookqa": "openbookqa",
}
SHARED_BENCHMARKS = [b for b in TASKS.values() if b != "hellaswag"]


def make_data_dir(path):
    """An LLM-Adapters dataset/ folder: the 7 shared benchmarks, and HellaSwag from our small fixture."""
    path.mkdir(parents=True, exist_ok=True)
    for benchmark in SHARED_BENCHMARKS:
        (path / benchmark).symlink_to(LLM_ADAPTERS / benchmark, target_is_directory=True)
    (path / "hellaswag").symlink_to(HELLASWAG_FIXTURE / "hellaswag", target_is_directory=True)
    return path


def read_items(data_dir, benchmark: str) -> list[dict]:
    return json.loads((data_dir / benchmark / "test.json").read_text())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("lm_eval") / "dataset")


@pytest.fixture(scope="module")
def task_manager(data_dir):
    """Our folder only (lm-eval's own tasks are not needed here), reading the data from data_dir."""
    return TaskManager(include_defaults=False, include_path=discovery.TASK_DIR, metadata={"data_dir": str(data_dir)})


def test_every_task_and_the_group_are_indexed(task_manager):
    # lm-eval skips a YAML it cannot parse without a word: all nine names must be there.
    assert task_manager.all_groups == ["dora_commonsense"]
    assert sorted(task_manager.all_subtasks) == sorted(TASKS)
    for name in [*TASKS, "dora_commonsense"]:
        assert os.path.dirname(task_manager.task_index[name].yaml_path) == discovery.TASK_DIR


@pytest.fixture(scope="module")
def loaded(task_manager):
    return task_manager.load(["dora_commonsense"])


def test_group_is_the_plain_mean_of_the_eight_tasks_for_both_filters(loaded):
    group = loaded["groups"]["dora_commonsense"]
    assert group.child_names == list(TASKS)
    # The paper's "Avg." is the mean of the eight accuracies, whatever the size of each test set.
    sizes = [3270, 1838, 1954, 10042, 1267, 2376, 1172, 500]
    improved = [0.70, 0.80, 0.75, 0.60, 0.65, 0.80, 0.65, 0.70]
    original = [0.72, 0.81, 0.76, 0.66, 0.66, 0.81, 0.66, 0.71]
    metrics = {
        task: {"acc,improved": i, "acc,original": o, "sample_len": n}
        for task, i, o, n in zip(TASKS, improved, original, sizes, strict=True)
    }
    aggregated = group.aggregate(metrics)
    assert aggregated["acc,improved"] == pytest.approx(sum(improved) / 8)
    assert aggregated["acc,original"] == pytest.approx(sum(original) / 8)


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_task_sends_the_paper_prompt_with_the_paper_generation_settings(loaded, data_dir, task_name):
    task = loaded["tasks"][task_name]
    assert task.OUTPUT_TYPE == "generate_until"
    # Beam search 4, no sampling, 32 new tokens, and no stop string: lm-eval adds only EOS.
    assert task.config.generation_kwargs == {"until": [], "num_beams": 4, "do_sample": False, "max_gen_toks": 32}
    assert [f.name for f in task._filters] == ["improved", "original"]
    docs, items = list(task.test_docs()), read_items(data_dir, TASKS[task_name])
    assert [d["instruction"] for d in docs] == [i["instruction"] for i in items]
    assert [d["answer"] for d in docs] == [i["answer"] for i in items]
    assert task.doc_to_text(docs[0]) == eval_prompt(items[0]["instruction"])
    assert task.doc_to_target(docs[0]) == items[0]["answer"]


def test_eval_prompt_is_byte_for_byte_the_papers():
    prompt = utils.doc_to_text({"instruction": "Q?\n\nAnswer format: true/false"})
    assert prompt == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request. "
        "\n\n                ### Instruction:\n                Q?\n\nAnswer format: true/false\n\n"
        "                ### Response:\n                "
    )


@pytest.mark.parametrize("name", SHARED_BENCHMARKS)
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
    docs = utils.load_docs("hellaswag", data_dir=str(HELLASWAG_FIXTURE), version=1.0, pretrained="m", peft="a")
    assert docs["test"]["answer"] == ["ending1", "ending2", "ending3"]
    assert docs["test"][1]["options"][1] == "Use a wide-tooth comb so the hair does not break."


def test_missing_data_folder_and_file_are_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        utils.load_docs("boolq", data_dir=str(tmp_path / "nowhere"))
    (tmp_path / "piqa").mkdir()
    (tmp_path / "piqa" / "test.json").write_text("[]")
    with pytest.raises(DataError, match=r"boolq/test\.json") as err:
        utils.load_docs("boolq", data_dir=str(tmp_path))
    assert "piqa" in str(err.value)  # and it says which benchmarks the folder does have


def test_record_without_a_field_names_the_file_and_the_field(tmp_path):
    (tmp_path / "boolq").mkdir()
    (tmp_path / "boolq" / "test.json").write_text(json.dumps([{"instruction": "q", "input": "", "output": "o"}]))
    with pytest.raises(DataError, match=r"boolq/test\.json.*'answer'"):
        utils.load_docs("boolq", data_dir=str(tmp_path))


def test_unreachable_hugging_face_dataset_says_to_use_data_dir():
    code = "from lm_eval_tasks import utils; utils.load_docs('boolq')"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    source = "aps/super_glue (boolq, validation)"
    assert f"DataError: boolq: could not load the Hugging Face dataset {source}" in result.stderr
    assert "data_dir" in result.stderr


@pytest.mark.parametrize("method", ["improved", "original"])
def test_filter_applies_the_extractor_with_each_docs_benchmark_and_options(method):
    from lm_eval_tasks.filters import ExtractAnswer

    rows = [json.loads(line) for f in sorted((SHARED_DATA / "generations").glob("*final*.jsonl"))
            for line in f.read_text().splitlines()[:40]]  # fmt: skip
    items = {b: load_llm_adapters(LLM_ADAPTERS, b) for b in SHARED_BENCHMARKS}
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
