"""``dora rescore`` on real generations and on files in the format of the paper's evaluation script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED_DATA

from dora_plugins.benchmarks import options_from_instruction
from dora_plugins.cli import main as dora
from dora_plugins.cli.rescore import benchmark_from_name
from dora_plugins.extract import improved

GENERATIONS = sorted((SHARED_DATA / "generations").glob("*.jsonl"))
NAMES = ["boolq", "piqa", "social_i_qa", "hellaswag", "winogrande", "ARC-Easy", "ARC-Challenge", "openbookqa"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _rescore_json(capsys, *argv) -> list[dict]:
    assert dora(["rescore", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_rescore_all_real_generations_counts_both_extractors(capsys):
    scores = _rescore_json(capsys, *GENERATIONS)
    assert [s["file"] for s in scores] == [p.name for p in GENERATIONS]
    for path, score in zip(GENERATIONS, scores, strict=True):
        rows = _rows(path)
        assert (score["benchmark"], score["n"]) == (rows[0]["benchmark"], len(rows))
        # original: the paper's stored predictions, recounted independently
        assert score["correct_original"] == sum(r["pred"] == r["answer"] for r in rows)
        assert score["unread_original"] == sum(r["pred"] == "" for r in rows)
        said = [
            improved(r["output_pred"], r["benchmark"], options_from_instruction(r.get("instruction", ""))) for r in rows
        ]
        assert score["correct_improved"] == sum(s == r["answer"] for s, r in zip(said, rows, strict=True))
        assert score["unread_improved"] == said.count("")
        assert score["acc_original"] == pytest.approx(score["correct_original"] / score["n"])
    broken = scores[[p.name for p in GENERATIONS].index("Dora-coursework__LLaMA-7B-DoRA__earlier__hellaswag.jsonl")]
    assert broken["acc_improved"] < broken["acc_original"]  # original credits 564 echoes of the format line
    assert broken["unread_improved"] - broken["unread_original"] >= 564


def _experiment_file(folder: Path, name: str, count: int) -> Path:
    """A file as commonsense_evaluate.py writes it: test.json records plus output_pred, pred, flag."""
    items = json.loads((SHARED_DATA / "llm_adapters" / "openbookqa" / "test.json").read_text(encoding="utf-8"))
    outputs = _rows(SHARED_DATA / "generations" / "Dora-coursework__LLaMA-7B-DoRA__final__openbookqa.jsonl")
    records = [
        {**item, "output_pred": out["output_pred"], "pred": out["pred"], "flag": out["pred"] == item["answer"]}
        for item, out in zip(items[:count], outputs[:count], strict=True)
    ]
    # the model wrote the option's text: only improved (with the options parsed from the instruction) reads it
    records.append(
        {**items[0], "output_pred": "the correct answer is quit eating lunch out", "pred": "", "flag": False}
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(records, indent=4), encoding="utf-8")
    return path


def test_rescore_reads_the_papers_experiment_files(tmp_path, capsys):
    path = _experiment_file(tmp_path / "experiment", "LLaMA-7B-DoRA-openbookqa.json", 100)
    records = json.loads(path.read_text())
    [score] = _rescore_json(capsys, path)
    assert (score["file"], score["benchmark"], score["n"]) == (path.name, "openbookqa", 101)
    assert score["correct_original"] == sum(r["flag"] for r in records)
    assert score["correct_improved"] == sum(
        improved(r["output_pred"], "openbookqa", options_from_instruction(r["instruction"])) == r["answer"]
        for r in records
    )
    assert improved(records[-1]["output_pred"], "openbookqa", options_from_instruction(records[-1]["instruction"])) == (
        "answer2"
    )
    assert dora(["rescore", str(path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["file", "benchmark", "n", "original", "unread", "improved", "unread"]
    assert table[2].split()[:3] == ["LLaMA-7B-DoRA-openbookqa.json", "openbookqa", "101"]


def test_rescore_takes_the_benchmark_from_a_flag(tmp_path, capsys):
    path = _experiment_file(tmp_path, "results.json", 10)
    assert dora(["rescore", str(path)]) == 2
    assert "record 0 has no known benchmark (None)" in capsys.readouterr().err
    [score] = _rescore_json(capsys, path, "--benchmark", "openbookqa")
    assert (score["benchmark"], score["n"]) == ("openbookqa", 11)


def test_rescore_data_dir_gives_options_to_rows_without_instruction(tmp_path, capsys):
    path = tmp_path / "run__ARC-Easy.jsonl"
    item = json.loads((SHARED_DATA / "llm_adapters" / "ARC-Easy" / "test.json").read_text(encoding="utf-8"))[0]
    said = "the correct answer is Sunlight is the source of energy for nearly all ecosystems."  # option 1's text
    row = {"benchmark": "ARC-Easy", "index": 0, "answer": item["answer"], "output_pred": said}
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    assert _rescore_json(capsys, path)[0]["correct_improved"] == 0
    assert _rescore_json(capsys, path, "--data-dir", SHARED_DATA / "llm_adapters")[0]["correct_improved"] == 1


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


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "No file"),
        ("[{", "is not valid JSON"),
        ('{"answer": "true"}', "holds a JSON dict, not a list of records"),
        ('[{"answer": "true", "output_pred": "true"}, {"answer": "true"}]', "record 1 has no field 'output_pred'"),
        ('[{"output_pred": "true"}]', "record 0 has no field 'answer'"),
    ],
)
def test_rescore_bad_files_are_clear_errors(tmp_path, capsys, content, message):
    path = tmp_path / "LLaMA-7B-DoRA-boolq.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert dora(["rescore", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dora rescore: ") and message in err and str(path) in err


def test_rescore_unknown_benchmark_flag(tmp_path, capsys):
    assert dora(["rescore", str(GENERATIONS[0]), "--benchmark", "boolqq"]) == 2
    assert "dora rescore: error: Unknown benchmark 'boolqq'. Did you mean 'boolq'?" in capsys.readouterr().err


def test_dora_rescore_console_script(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    path = SHARED_DATA / "generations" / "Dora-coursework__LLaMA2-7B-LoRA__earlier__boolq.jsonl"
    script = Path(sys.executable).with_name("dora")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "dora_plugins"]
    done = subprocess.run([*command, "rescore", str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "boolq" in done.stdout and "72.73%" in done.stdout  # 80 of 110 with both extractors


def test_readme_rescore_table_is_what_rescore_prints(capsys):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Extract and rescore", 1)[1].split("\n## ", 1)[0]
    block = section.split("On real generations", 1)[1].split("```\n", 2)[1]
    lines = block.strip("\n").splitlines()
    files = [SHARED_DATA / "generations" / line.split()[0] for line in lines[1:]]
    assert dora(["rescore", *map(str, files)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split() for line in printed] == [line.split() for line in [lines[0], printed[1], *lines[1:]]]
