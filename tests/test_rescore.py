"""``dora rescore``: every registered extractor on saved generations, row-by-row explanations, and clear errors.

Real rows come from the committed hand-labelled set (tests/data/extract_labels.jsonl: real outputs with the
paper's stored predictions), so that these tests mean something in a fresh clone; the full corpus runs in CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, SHARED_DATA, requires_shared_data, shared_files

from dora_plugins import get_plugin_manager
from dora_plugins.benchmarks import options_from_instruction
from dora_plugins.cli import main as dora
from dora_plugins.extract import RULES, improved
from dora_plugins.hookspecs import hookimpl
from dora_plugins.rescore import benchmark_from_name

LABELLED = [json.loads(line) for line in (REPO / "tests/data/extract_labels.jsonl").read_text("utf-8").splitlines()]
NAMES = ["boolq", "piqa", "social_i_qa", "hellaswag", "winogrande", "ARC-Easy", "ARC-Challenge", "openbookqa"]


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _generation_rows(benchmark: str | None = None) -> list[dict]:
    keys = ("benchmark", "index", "answer", "output_pred", "pred", "options")
    return [{key: row[key] for key in keys} for row in LABELLED if benchmark in (None, row["benchmark"])]


def _rescore(capsys, *argv) -> tuple[int, str, str]:
    status = dora(["rescore", *map(str, argv)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _scores(capsys, *argv) -> list[dict]:
    status, out, err = _rescore(capsys, *argv, "--format", "json")
    assert status == 0, err
    return json.loads(out)


# ---- scores --------------------------------------------------------------------------------------------------


def test_rescore_counts_both_extractors_on_real_rows(tmp_path, capsys):
    rows = _generation_rows()
    path = _write_jsonl(tmp_path / "labelled.jsonl", rows)
    scores = {s["benchmark"]: s for s in _scores(capsys, path)}
    assert set(scores) == {row["benchmark"] for row in rows}
    for benchmark, score in scores.items():
        mine = [row for row in rows if row["benchmark"] == benchmark]
        assert (score["file"], score["n"]) == ("labelled.jsonl", len(mine))
        original, ours = score["extractors"]["original"], score["extractors"]["improved"]
        # original: the paper's stored predictions, recounted independently
        assert original["correct"] == sum(r["pred"] == r["answer"] for r in mine)
        assert original["unread"] == sum(r["pred"] == "" for r in mine)
        said = [improved(r["output_pred"], benchmark, r["options"]) for r in mine]
        assert ours["correct"] == sum(s == r["answer"] for s, r in zip(said, mine, strict=True))
        assert ours["unread"] == said.count("")
        assert ours["accuracy"] == pytest.approx(ours["correct"] / score["n"])


def _instruction(row: dict) -> str:
    """The LLM-Adapters instruction of a labelled ARC/OBQA row, rebuilt from its question and options."""
    listed = " ".join(f"Answer{i}: {text}" for i, text in enumerate(row["options"], start=1))
    formats = "/".join(f"answer{i}" for i in range(1, len(row["options"]) + 1))
    return f"{row['question']}\n\n{listed}\n\nAnswer format: {formats}"


def test_rescore_reads_the_papers_experiment_files(tmp_path, capsys):
    """Files as commonsense_evaluate.py writes them: test.json records plus output_pred, pred, flag."""
    rows = [row for row in LABELLED if row["benchmark"] == "ARC-Easy"]
    records = [
        {"instruction": _instruction(r), "input": "", "output": f"the correct answer is {r['answer']}",
         "answer": r["answer"], "output_pred": r["output_pred"], "pred": r["pred"], "flag": r["pred"] == r["answer"]}
        for r in rows
    ]  # fmt: skip
    assert [options_from_instruction(r["instruction"]) for r in records] == [r["options"] for r in rows]
    path = tmp_path / "experiment" / "LLaMA-7B-DoRA-ARC-Easy.json"
    path.parent.mkdir()
    path.write_text(json.dumps(records, indent=4), encoding="utf-8")
    [score] = _scores(capsys, path)
    assert (score["file"], score["benchmark"], score["n"]) == (path.name, "ARC-Easy", len(rows))
    assert score["extractors"]["original"]["correct"] == sum(r["flag"] for r in records)
    assert score["extractors"]["improved"]["correct"] == sum(
        improved(r["output_pred"], "ARC-Easy", r["options"]) == r["answer"] for r in rows
    )
    status, out, _ = _rescore(capsys, path)
    table = out.splitlines()
    assert status == 0 and table[0].split() == ["file", "benchmark", "n", "original", "unread", "improved", "unread"]
    assert table[1].split()[:3] == ["LLaMA-7B-DoRA-ARC-Easy.json", "ARC-Easy", str(len(rows))]


def test_rescore_takes_the_benchmark_from_a_flag(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps([{"answer": "answer1", "output_pred": "Answer1"}]), encoding="utf-8")
    status, _, err = _rescore(capsys, path)
    assert status == 2
    assert f"{path}, record 0: no benchmark: the row has no 'benchmark' field" in err and "pass --benchmark" in err
    [score] = _scores(capsys, path, "--benchmark", "openbookqa")
    assert (score["benchmark"], score["n"], score["extractors"]["improved"]["correct"]) == ("openbookqa", 1, 1)


def _data_dir(root: Path) -> Path:
    """An LLM-Adapters dataset/ folder with one ARC-Easy item (a real one)."""
    row = next(r for r in LABELLED if r["benchmark"] == "ARC-Easy")
    item = {"instruction": _instruction(row), "input": "", "output": f"the correct answer is {row['answer']}",
            "answer": row["answer"]}  # fmt: skip
    (root / "ARC-Easy").mkdir(parents=True)
    (root / "ARC-Easy" / "test.json").write_text(json.dumps([item]), encoding="utf-8")
    return root


def test_rescore_data_dir_gives_options_to_rows_without_instruction(tmp_path, capsys):
    data_dir = _data_dir(tmp_path / "dataset")
    option = options_from_instruction(json.loads((data_dir / "ARC-Easy/test.json").read_text())[0]["instruction"])[0]
    row = {"benchmark": "ARC-Easy", "index": 0, "answer": "answer1", "output_pred": f"The answer: {option}"}
    path = _write_jsonl(tmp_path / "run__ARC-Easy.jsonl", [row])
    assert _scores(capsys, path)[0]["extractors"]["improved"]["correct"] == 0
    assert _scores(capsys, path, "--data-dir", data_dir)[0]["extractors"]["improved"]["correct"] == 1


def test_rescore_reads_lm_eval_samples_once_per_doc(tmp_path, capsys):
    docs = [{"benchmark": "piqa", "answer": "solution2", "instruction": "x", "options": ["a", "b"]}] * 2
    samples = [
        {"doc_id": i, "doc": doc, "filter": name, "resps": [[said]], "filtered_resps": ["?"]}
        for name in ("improved", "original")
        for i, (doc, said) in enumerate(zip(docs, ["the correct answer is Solution2", "solution2"], strict=True))
    ]
    path = _write_jsonl(tmp_path / "samples_dora_piqa_2025.jsonl", samples)
    [score] = _scores(capsys, path)
    assert score["n"] == 2
    assert (score["extractors"]["improved"]["correct"], score["extractors"]["original"]["correct"]) == (2, 1)


@pytest.mark.parametrize(
    ("file_name", "expected"),
    [
        ("LLaMA-7B-DoRA-ARC-Easy.json", "ARC-Easy"),
        ("LLaMA3-8B-DoRA-ARC-Challenge.json", "ARC-Challenge"),
        ("LLaMA2-7B-LoRA-social_i_qa.json", "social_i_qa"),
        ("DeepFFN__x__final__openbookqa.jsonl", "openbookqa"),
        ("boolq.json", "boolq"),
        ("results.json", None),
        ("LLaMA-7B-DoRA-boolqx.json", None),
    ],
)
def test_benchmark_from_file_name(file_name, expected):
    assert benchmark_from_name(Path(file_name), NAMES) == expected


# ---- --method ------------------------------------------------------------------------------------------------


class _ShoutPlugin:
    @hookimpl
    def dora_answer_extractors(self, register):
        register("shout", lambda text, benchmark, options: "true" if "TRUE" in text else "", "upper-case only")


@pytest.fixture
def shout_plugin():
    pm = get_plugin_manager()
    pm.register(_ShoutPlugin(), name="shout-plugin")
    try:
        yield
    finally:
        pm.unregister(name="shout-plugin")


def test_rescore_method_takes_any_registered_extractor(tmp_path, capsys, shout_plugin):
    rows = [{"benchmark": "boolq", "answer": "true", "output_pred": text} for text in ("TRUE", "true", "no")]
    path = _write_jsonl(tmp_path / "boolq.jsonl", rows)
    [score] = _scores(capsys, path, "--method", "shout", "--method", "improved")
    assert list(score["extractors"]) == ["shout", "improved"]
    assert score["extractors"]["shout"] == {"accuracy": pytest.approx(1 / 3), "correct": 1, "unread": 2}
    assert score["extractors"]["improved"]["correct"] == 2
    status, out, _ = _rescore(capsys, path, "--method", "shout")
    assert status == 0 and out.splitlines()[0].split() == ["file", "benchmark", "n", "shout", "unread"]


def test_rescore_unknown_method_is_a_did_you_mean_error_before_any_file_is_read(tmp_path, capsys):
    status, out, err = _rescore(capsys, tmp_path / "never-read.jsonl", "--method", "improve")
    assert (status, out) == (2, "")
    assert err.startswith("dora rescore: error: Unknown answer extractor 'improve'. Did you mean 'improved'?")
    assert "Available: improved, original" in err


# ---- --explain -----------------------------------------------------------------------------------------------


def test_rescore_explain_prints_every_row_with_the_rule(tmp_path, capsys):
    rows = [
        {"benchmark": "ARC-Easy", "answer": "answer3", "output_pred": "the correct answer is answer3"},
        {"benchmark": "ARC-Easy", "answer": "answer1", "output_pred": "x\n\nAnswer format: answer1/answer2"},
        {"benchmark": "ARC-Easy", "answer": "answer2", "output_pred": "We live in the troposphere.",
         "options": ["the mesosphere", "the troposphere", "the stratosphere"]},
    ]  # fmt: skip
    path = _write_jsonl(tmp_path / "run.jsonl", rows)
    status, out, _ = _rescore(capsys, path, "--explain")
    lines = out.splitlines()
    assert status == 0 and len(lines) == 3
    assert lines[0] == (
        f"{path}, line 1  gold=answer3  original=answer3  improved=answer3  "
        "[explicit statement: 'the correct answer is answer3']"
    )
    assert (
        lines[1]
        == f"{path}, line 2  gold=answer1  original=answer1  improved=-  [echo]  (ignored: echo of the format line)"
    )
    assert lines[2].endswith("improved=answer2  [option text: 'We live in the troposphere.']")
    status, out, _ = _rescore(capsys, path, "--explain", "--format", "jsonl")
    explained = [json.loads(line) for line in out.splitlines()]
    assert [e["rule"] for e in explained] == ["explicit statement", "echo", "option text"]
    assert explained[1] == {
        "where": f"{path}, line 2", "benchmark": "ARC-Easy", "answer": "answer1",
        "labels": {"original": "answer1", "improved": ""}, "rule": "echo", "evidence": "",
        "ignored": ["echo of the format line"], "output_pred": "x\n\nAnswer format: answer1/answer2",
    }  # fmt: skip


def test_rescore_explain_covers_every_labelled_row(tmp_path, capsys):
    path = _write_jsonl(tmp_path / "labelled.jsonl", _generation_rows())
    status, out, _ = _rescore(capsys, path, "--explain", "--format", "jsonl")
    explained = [json.loads(line) for line in out.splitlines()]
    assert status == 0 and len(explained) == len(LABELLED)
    assert all(e["rule"] in RULES for e in explained)
    assert [e["labels"]["original"] for e in explained] == [row["pred"] for row in LABELLED]


def test_rescore_formats_jsonl_one_score_per_line(tmp_path, capsys):
    path = _write_jsonl(tmp_path / "labelled.jsonl", _generation_rows())
    status, out, _ = _rescore(capsys, path, "--format", "jsonl")
    assert status == 0 and [json.loads(line) for line in out.splitlines()] == _scores(capsys, path)


# ---- bad input: each message names the file, the line or record, and the field ------------------------------

GOOD = {"benchmark": "ARC-Easy", "answer": "answer1", "output_pred": "Answer1"}
NOT_TEXTS = "field 'options' must be a list of strings (the answer texts in label order), not "
NEEDS = " (each row needs answer, output_pred)"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({**GOOD, "options": [None, "x"]}, NOT_TEXTS + '[null, "x"]'),
        ({**GOOD, "options": [1, 2]}, NOT_TEXTS + "[1, 2]"),
        ({**GOOD, "instruction": 3}, "field 'instruction' is a JSON number (3), expected a string"),
        ({**GOOD, "answer": 1}, "field 'answer' is a JSON number (1), expected a string" + NEEDS),
        ({**GOOD, "output_pred": None}, "field 'output_pred' is a JSON null (null), expected a string" + NEEDS),
        ({"benchmark": "ARC-Easy", "answer": "answer1"}, "has no field 'output_pred'" + NEEDS),
        ({**GOOD, "benchmark": "ARC-easy"}, "Unknown benchmark 'ARC-easy'. Did you mean 'ARC-Easy'?"),
        ({**GOOD, "benchmark": 7}, "field 'benchmark' is a JSON number (7), expected a string"),
        ([GOOD], "is a JSON array, expected an object with answer, output_pred"),
    ],
)
def test_rescore_bad_rows_are_named_by_file_line_and_field(tmp_path, capsys, row, message):
    path = _write_jsonl(tmp_path / "run.jsonl", [GOOD, row])
    status, out, err = _rescore(capsys, path)
    assert (status, out) == (2, "")
    assert err.startswith(f"dora rescore: error: {path}, line 2: {message}")


@pytest.mark.parametrize(
    ("index", "message"),
    [
        (5, "field 'index' is 5, but {data}/ARC-Easy/test.json has 1 items (0 to 0)"),
        (-1, "field 'index' is -1, but {data}/ARC-Easy/test.json has 1 items (0 to 0)"),
        ("0", "field 'index' is a JSON string (\"0\"), expected an integer (the item's number in ARC-Easy/test.json)"),
        (0.5, "field 'index' is a JSON number (0.5), expected an integer"),
        (True, "field 'index' is a JSON boolean (true), expected an integer"),
    ],
)
def test_rescore_bad_index_is_named(tmp_path, capsys, index, message):
    data_dir = _data_dir(tmp_path / "dataset")
    path = _write_jsonl(tmp_path / "run.jsonl", [{**GOOD, "index": index}])
    status, _, err = _rescore(capsys, path, "--data-dir", data_dir)
    assert status == 2 and err.startswith(f"dora rescore: error: {path}, line 1: {message.format(data=data_dir)}")


def _sample(doc, resps) -> dict:
    return {"doc": doc, "resps": resps, "filter": "improved"}


PIQA_DOC = {"benchmark": "piqa", "answer": "solution1"}
NOT_NESTED = "field 'resps' must be [[generation text], ...]"


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        (_sample("piqa", [["x"]]), "field 'doc' is a JSON string (\"piqa\"), expected an object"),
        (_sample(PIQA_DOC, ["x"]), NOT_NESTED),
        (_sample(PIQA_DOC, []), NOT_NESTED),
        (_sample({"benchmark": "piqa"}, [["x"]]), "has no field 'answer'"),
        (_sample({**PIQA_DOC, "options": "a b"}, [["x"]]), "field 'options' must be a list of strings"),
    ],
)
def test_rescore_malformed_lm_eval_samples_are_named(tmp_path, capsys, sample, message):
    path = _write_jsonl(tmp_path / "samples_dora_piqa.jsonl", [_sample(PIQA_DOC, [["solution1"]]), sample])
    status, _, err = _rescore(capsys, path)
    assert status == 2 and err.startswith(f"dora rescore: error: {path}, line 2: {message}")


def test_rescore_bad_json_line_is_reported_with_its_file_line(tmp_path, capsys):
    path = tmp_path / "run.jsonl"
    path.write_text("\n".join([json.dumps(GOOD)] * 25 + ['{"answer": "answer1", "output_pred": }']) + "\n", "utf-8")
    status, _, err = _rescore(capsys, path)
    assert status == 2 and err.startswith(f"dora rescore: error: {path} is not valid JSON at line 26 column 38")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "No file {path}"),
        ("[{", "{path} is not valid JSON at line 1 column 3"),
        ('{"answer": "true"}', "{path} holds a JSON dict, not a list of records"),
        (
            '[{"answer": "true", "output_pred": "true"}, {"answer": "true"}]',
            "{path}, record 1: has no field 'output_pred'",
        ),
        ('[{"output_pred": "true"}]', "{path}, record 0: has no field 'answer'"),
        ('[{"answer": ["true"], "output_pred": "true"}]', "{path}, record 0: field 'answer' is a JSON array"),
    ],
)
def test_rescore_bad_files_are_clear_errors(tmp_path, capsys, content, message):
    path = tmp_path / "LLaMA-7B-DoRA-boolq.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    status, _, err = _rescore(capsys, path)
    assert status == 2 and err.startswith("dora rescore: error: " + message.format(path=path))


def test_rescore_a_folder_is_reported_as_a_folder(tmp_path, capsys):
    (tmp_path / "x.json").mkdir()
    status, _, err = _rescore(capsys, tmp_path / "x.json")
    assert status == 2 and err.startswith(f"dora rescore: error: {tmp_path / 'x.json'} is a folder, not a file.")


def test_rescore_unknown_benchmark_flag(tmp_path, capsys):
    path = _write_jsonl(tmp_path / "run.jsonl", [GOOD])
    status, _, err = _rescore(capsys, path, "--benchmark", "boolqq")
    assert status == 2
    assert err.startswith("dora rescore: error: Unknown benchmark 'boolqq'. Did you mean 'boolq'? Available: ")


def test_dora_rescore_console_script(tmp_path):
    rows = _generation_rows("boolq")
    path = _write_jsonl(tmp_path / "run__boolq.jsonl", rows)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    script = Path(sys.executable).with_name("dora")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "dora_plugins"]
    done = subprocess.run([*command, "rescore", str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    accuracy = 100 * sum(r["pred"] == r["answer"] for r in rows) / len(rows)
    assert done.stdout.splitlines()[1].split()[:4] == ["run__boolq.jsonl", "boolq", str(len(rows)), f"{accuracy:.2f}%"]


# ---- the full corpus (CI) ------------------------------------------------------------------------------------


@requires_shared_data
def test_rescore_all_real_generations_counts_both_extractors(capsys):
    files = shared_files("generations/*.jsonl")
    scores = _scores(capsys, *files)
    assert [s["file"] for s in scores] == [p.name for p in files]
    for path, score in zip(files, scores, strict=True):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert (score["benchmark"], score["n"]) == (rows[0]["benchmark"], len(rows))
        assert score["extractors"]["original"]["correct"] == sum(r["pred"] == r["answer"] for r in rows)
        assert score["extractors"]["original"]["unread"] == sum(r["pred"] == "" for r in rows)
        said = [
            improved(r["output_pred"], r["benchmark"], options_from_instruction(r.get("instruction", ""))) for r in rows
        ]
        assert score["extractors"]["improved"]["correct"] == sum(
            s == r["answer"] for s, r in zip(said, rows, strict=True)
        )
        assert score["extractors"]["improved"]["unread"] == said.count("")
    broken = scores[[p.name for p in files].index("Dora-coursework__LLaMA-7B-DoRA__earlier__hellaswag.jsonl")]
    assert broken["extractors"]["improved"]["accuracy"] < broken["extractors"]["original"]["accuracy"]
    assert broken["extractors"]["improved"]["unread"] - broken["extractors"]["original"]["unread"] >= 564


@requires_shared_data
def test_documented_rescore_table_is_what_rescore_prints(capsys):
    page = (REPO / "docs" / "extraction.md").read_text(encoding="utf-8")
    block = page.split("On real generations", 1)[1].split("```\n", 2)[1]
    lines = block.strip("\n").splitlines()
    files = [SHARED_DATA / "generations" / line.split()[0] for line in lines[1:]]
    status, out, _ = _rescore(capsys, *files, "--data-dir", SHARED_DATA / "llm_adapters")
    assert status == 0
    assert [line.split() for line in out.splitlines()] == [line.split() for line in lines]
