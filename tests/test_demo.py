"""``dora demo``: the bundled sample is real data, the local model and tokenizer work, and the quick demo
trains, merges and scores end to end with the real TRL / PEFT / lm-eval stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SHARED_DATA

from dora_plugins.cli import demo

TRAINED = ("boolq", "ARC-Easy", "ARC-Challenge", "openbookqa")  # the LLM-Adapters train files we sample


def _load(path: Path):
    return json.loads(path.read_text())


def test_training_sample_is_the_first_100_records_of_each_train_file():
    expected = [r for b in TRAINED for r in _load(SHARED_DATA / "llm_adapters" / b / "train.json")[:100]]
    assert _load(demo.TRAIN_FILE) == expected


# The parameter is not called "benchmark": pytest-benchmark owns that fixture name.
@pytest.mark.parametrize("name", [b for b, _, _ in demo.COLUMNS if b != "hellaswag"])
def test_eval_sample_is_the_first_40_items_of_the_test_file(name):
    expected = _load(SHARED_DATA / "llm_adapters" / name / "test.json")[:40]
    assert _load(demo.EVAL_DIR / name / "test.json") == expected


def test_hellaswag_sample_is_built_from_the_logged_real_instructions():
    source = SHARED_DATA / "generations" / "Dora-coursework__LLaMA-7B-DoRA__earlier__hellaswag.jsonl"
    rows = {row["index"]: row for row in map(json.loads, source.read_text().splitlines())}
    items = _load(demo.EVAL_DIR / "hellaswag" / "test.json")
    assert len(items) == 40
    for index, item in enumerate(items):
        assert item == {
            "instruction": rows[index]["instruction"],
            "input": "",
            "output": f"the correct answer is {rows[index]['answer']}",
            "answer": rows[index]["answer"],
        }
        assert item["instruction"].endswith("Answer format: ending1/ending2/ending3/ending4")


def test_eval_sample_is_a_data_dir_for_every_registered_benchmark():
    from dora_plugins.benchmarks import load_llm_adapters
    from dora_plugins.plugins import get_benchmarks

    assert {b for b, _, _ in demo.COLUMNS} == set(get_benchmarks())
    for benchmark, _, _ in demo.COLUMNS:
        items = load_llm_adapters(demo.EVAL_DIR, benchmark)
        assert len(items) == 40 and all(item["answer"] in get_benchmarks()[benchmark].value.labels for item in items)


def test_sample_is_small_and_carries_the_odc_by_attribution():
    size = sum(p.stat().st_size for p in demo.DEMO_DATA.rglob("*") if p.is_file())
    assert size < 500_000
    readme = (demo.DEMO_DATA / "README.md").read_text()
    assert "ODC-By" in readme and "AGI-Edgerunners/LLM-Adapters" in readme


def test_tiny_tokenizer_round_trips_and_ends_a_prompt_as_in_training():
    from dora_plugins.cli.demo_model import build_model, build_tokenizer
    from dora_plugins.prompts import eval_prompt, train_text

    records = _load(demo.TRAIN_FILE)
    tokenizer = build_tokenizer(train_text(r["instruction"], r["output"]) for r in records)
    text = train_text(records[0]["instruction"], records[0]["output"])
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    prompt = eval_prompt(records[0]["instruction"])
    prompt_ids = tokenizer(prompt)["input_ids"]
    # the 16-space indent before the answer is one token either way, so generation starts where training did
    assert tokenizer(prompt + "the correct answer is true")["input_ids"][: len(prompt_ids)] == prompt_ids
    assert {tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token} == {"</s>", "<pad>", "<s>"}
    model = build_model(tokenizer)
    assert model.config.vocab_size == len(tokenizer) and sum(p.numel() for p in model.parameters()) < 200_000


def test_paper_row_is_llama2_7b_dora_of_table_1_and_its_average():
    assert demo.PAPER_LLAMA2_7B_DORA == [71.8, 83.7, 76.0, 89.1, 82.6, 83.7, 68.2, 82.4, 79.7]
    assert round(sum(demo.PAPER_LLAMA2_7B_DORA[:8]) / 8, 1) == demo.PAPER_LLAMA2_7B_DORA[8]


def test_importing_the_demo_pulls_in_neither_trl_nor_lm_eval():
    code = "import sys, dora_plugins.cli.demo; print(sorted({'trl', 'lm_eval'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    """``dora demo --quick --output DIR`` run once, offline, as a user runs it."""
    output = tmp_path_factory.mktemp("demo") / "run"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "dora_plugins", "demo", "--quick", "--output", str(output)],
        capture_output=True,
        text=True,
        env=env,
        cwd=output.parent,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output, result.stdout, result.stderr


def test_quick_demo_prints_the_table_and_the_next_commands(quick_demo):
    _, stdout, stderr = quick_demo
    header = next(line for line in stdout.splitlines() if "BoolQ" in line and "Avg." in line)
    assert header.split() == ["BoolQ", "PIQA", "SIQA", "HellaSwag", "WinoGrande", "ARC-e", "ARC-c", "OBQA", "Avg."]
    assert "tiny DoRA, improved" in stdout and "tiny DoRA, original" in stdout
    paper = next(line for line in stdout.splitlines() if line.startswith("paper: LLaMA2-7B DoRA r=32"))
    assert [float(cell) for cell in paper.split()[-9:]] == demo.PAPER_LLAMA2_7B_DORA
    assert "dora sft --config llama2_7b_dora" in stdout
    assert "lm_eval --model hf --model_args pretrained=meta-llama/Llama-2-7b-hf,peft=" in stdout
    assert "--tasks dora_commonsense" in stdout
    for step in ("[1/4]", "[2/4]", "[3/4]", "[4/4]"):
        assert step in stdout
    assert "Running generate_until requests" in stderr and "40/40" in stderr  # evaluation and training bars


def test_quick_demo_keeps_a_loadable_dora_adapter_and_merged_model(quick_demo):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    output, _, _ = quick_demo
    config = _load(output / "adapter" / "adapter_config.json")
    assert config["peft_type"] == "LORA" and config["use_dora"] is True
    base = AutoModelForCausalLM.from_pretrained(output / "base")
    merged = AutoModelForCausalLM.from_pretrained(output / "merged")
    adapted = PeftModel.from_pretrained(base, output / "adapter").eval()  # stock PEFT, our adapter
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted(ids).logits, atol=1e-4, rtol=1e-4)


def test_quick_demo_results_json_matches_lm_eval_scores(quick_demo):
    output, _, _ = quick_demo
    report = _load(output / "results.json")
    table, results = report["table"], report["lm_eval"]["results"]
    assert report["settings"] == {**demo.QUICK.__dict__}
    assert table["items"] == [4] * 8
    for name in demo.FILTERS:
        scores = table[name]["scores"]
        assert scores[:8] == [100 * results[task][f"acc,{name}"] for _, task, _ in demo.COLUMNS]
        assert scores[8] == pytest.approx(100 * results[demo.GROUP][f"acc,{name}"])  # the group: plain mean
        assert 0 <= table[name]["unread"] <= 32
    samples = report["lm_eval"]["samples"]["dora_boolq"]
    assert samples[0]["arguments"][0][0].startswith("Below is an instruction that describes a task.")


def test_without_output_the_work_folder_is_removed_and_failures_propagate(monkeypatch, capsys):
    from dora_plugins.errors import DataError

    seen = []

    def fake_run(workdir, settings, final=None, fail=False):
        (workdir / "results.json").write_text("{}")
        seen.append((workdir, settings))
        if fail:
            raise DataError("training failed")

    monkeypatch.setattr(demo, "run", fake_run)
    assert demo.main(["--quick"]) == 0
    workdir, settings = seen[-1]
    assert settings == demo.QUICK and not workdir.exists()
    assert "Pass --output DIR to keep" in capsys.readouterr().out

    monkeypatch.setattr(demo, "run", lambda workdir, settings: fake_run(workdir, settings, fail=True))
    with pytest.raises(DataError, match="training failed"):
        demo.main([])
    assert seen[-1][1] == demo.FULL and not seen[-1][0].exists()
    assert "Next, with a real model" not in capsys.readouterr().out


def test_a_failed_run_leaves_an_existing_output_as_it_was(monkeypatch, tmp_path):
    from dora_plugins.errors import DataError

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.json").write_text("previous run")

    def failing_run(workdir, settings, final=None):
        (workdir / "results.json").write_text("half")
        raise DataError("training failed")

    monkeypatch.setattr(demo, "run", failing_run)
    with pytest.raises(DataError):
        demo.main(["--output", str(tmp_path / "out"), "--overwrite"])
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (tmp_path / "out" / "results.json").read_text() == "previous run"
