"""``dora demo``: the bundled sample is real data and its training records are disjoint from its evaluation items,
the local model and tokenizer work, the quick (tiny) demo trains LoRA and DoRA, merges, scores and analyzes end to
end with the real TRL / PEFT / lm-eval stack, and the real-model demo runs through the same code on SmolLM2."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SHARED_DATA, real_model_path, requires_shared_data

from dora_plugins.cli import demo
from dora_plugins.cli.demo_settings import QUICK, REAL, Settings
from dora_plugins.cli.demo_steps import Plan
from dora_plugins.cli.demo_table import COLUMNS, FILTERS, GROUP, PAPER_LLAMA2_7B_DORA

BENCHMARKS = [b for b, _, _ in COLUMNS]
WITH_TRAIN_FILE = ("boolq", "ARC-Easy", "ARC-Challenge", "openbookqa")  # LLM-Adapters has their train.json
SHARED_LABELS = ("social_i_qa", "ARC-Easy", "ARC-Challenge", "openbookqa")  # all answer with answer1..answer5
EVAL_ITEMS = 40  # per benchmark
# training records per benchmark: 50 per family of labels (true/false, solution, ending, option, answer)
TRAIN_RECORDS = {benchmark: 25 if benchmark in SHARED_LABELS else 50 for benchmark in BENCHMARKS}
HELLASWAG_SOURCE = "generations/Dora-coursework__LLaMA-7B-DoRA__earlier__hellaswag.jsonl"


def _load(path: Path):
    return json.loads(path.read_text())


def _hellaswag_records(indices: range) -> list[dict]:
    """LLM-Adapters records of HellaSwag validation items, from the instructions the DoRA evaluation logged."""
    source = SHARED_DATA / HELLASWAG_SOURCE
    rows = {row["index"]: row for row in map(json.loads, source.read_text().splitlines())}
    return [
        {"instruction": rows[i]["instruction"], "input": "", "output": f"the correct answer is {rows[i]['answer']}",
         "answer": rows[i]["answer"]}
        for i in indices
    ]  # fmt: skip


def _training_records(benchmark: str) -> list[dict]:
    """What the bundled sample holds for ``benchmark``: its train.json's first records where LLM-Adapters has
    one, otherwise test items after those of the evaluation sample."""
    folder, count = SHARED_DATA / "llm_adapters" / benchmark, TRAIN_RECORDS[benchmark]
    if benchmark == "hellaswag":
        return _hellaswag_records(range(EVAL_ITEMS, EVAL_ITEMS + count))
    if benchmark in WITH_TRAIN_FILE:
        return _load(folder / "train.json")[:count]
    return _load(folder / "test.json")[EVAL_ITEMS : EVAL_ITEMS + count]


@requires_shared_data
def test_training_sample_holds_real_records_of_all_eight_benchmarks():
    assert _load(demo.TRAIN_FILE) == [record for b in BENCHMARKS for record in _training_records(b)]


# The parameter is not called "benchmark": pytest-benchmark owns that fixture name.
@requires_shared_data
@pytest.mark.parametrize("name", [b for b in BENCHMARKS if b != "hellaswag"])
def test_eval_sample_is_the_first_40_items_of_the_test_file(name):
    expected = _load(SHARED_DATA / "llm_adapters" / name / "test.json")[:EVAL_ITEMS]
    assert _load(demo.EVAL_DIR / name / "test.json") == expected


@requires_shared_data
def test_hellaswag_sample_is_built_from_the_logged_real_instructions():
    items = _load(demo.EVAL_DIR / "hellaswag" / "test.json")
    assert items == _hellaswag_records(range(EVAL_ITEMS))
    assert all(item["instruction"].endswith("Answer format: ending1/ending2/ending3/ending4") for item in items)


def test_training_records_are_in_the_paper_format_and_never_an_evaluation_item():
    from dora_plugins.benchmarks import options_from_instruction
    from dora_plugins.extract import extract_answer

    records = _load(demo.TRAIN_FILE)
    assert len(records) == sum(TRAIN_RECORDS.values()) == 300
    start = 0
    for benchmark in BENCHMARKS:
        mine, start = records[start : start + TRAIN_RECORDS[benchmark]], start + TRAIN_RECORDS[benchmark]
        for record in mine:
            assert record["output"] == f"the correct answer is {record['answer']}" and record["input"] == ""
            options = options_from_instruction(record["instruction"])
            assert extract_answer(record["output"], benchmark, options=options) == record["answer"]
        evaluated = {item["instruction"] for item in _load(demo.EVAL_DIR / benchmark / "test.json")}
        assert not evaluated & {record["instruction"] for record in mine}
        assert len({record["answer"] for record in mine}) > 1  # not one label everywhere


def test_eval_sample_is_a_data_dir_for_every_registered_benchmark():
    from dora_plugins.benchmarks import load_llm_adapters
    from dora_plugins.plugins import get_benchmarks

    assert set(BENCHMARKS) == set(get_benchmarks())
    for benchmark in BENCHMARKS:
        items = load_llm_adapters(demo.EVAL_DIR, benchmark)
        labels = get_benchmarks()[benchmark].value.labels
        assert len(items) == EVAL_ITEMS and all(item["answer"] in labels for item in items)


def test_sample_is_small_and_carries_its_attribution_and_licences():
    size = sum(p.stat().st_size for p in demo.DEMO_DATA.rglob("*") if p.is_file())
    assert size < 350_000
    readme = (demo.DEMO_DATA / "README.md").read_text()
    assert "ODC-By" in readme and "AGI-Edgerunners/LLM-Adapters" in readme
    for licence in ("CC BY-SA 3.0", "AFL 3.0", "CC BY 4.0", "MIT", "CC BY-SA 4.0", "Apache 2.0"):
        assert licence in readme
    assert "never one of the evaluation items" in readme


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
    assert PAPER_LLAMA2_7B_DORA == [71.8, 83.7, 76.0, 89.1, 82.6, 83.7, 68.2, 82.4, 79.7]
    assert round(sum(PAPER_LLAMA2_7B_DORA[:8]) / 8, 1) == PAPER_LLAMA2_7B_DORA[8]


def test_importing_the_demo_pulls_in_neither_trl_nor_lm_eval():
    code = "import sys, dora_plugins.cli.demo; print(sorted({'trl', 'lm_eval'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _run_demo(output: Path, *flags: str) -> tuple[str, str]:
    """``dora demo [flags] --output DIR``, offline, as a user runs it."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "dora_plugins", "demo", *flags, "--output", str(output)],
        capture_output=True, text=True, env=env, cwd=output.parent, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout, result.stderr


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    output = tmp_path_factory.mktemp("demo") / "run"
    return output, *_run_demo(output, "--quick")


MODELS = [demo.BASE_LABEL] + [label for _, label in demo.METHODS]


def _table_rows(stdout: str) -> dict[tuple[str, str], int]:
    """(model, extractor) -> unread count, from the rows of the printed table."""
    import re

    rows = re.findall(r"^(.+), (improved|original) \((\d+) unread\) ", stdout, flags=re.MULTILINE)
    return {(model, extractor): int(unread) for model, extractor, unread in rows}


@pytest.mark.slow
def test_quick_demo_prints_a_row_per_model_and_extractor_and_the_next_commands(quick_demo):
    _, stdout, stderr = quick_demo
    header = next(line for line in stdout.splitlines() if "BoolQ" in line and "Avg." in line)
    assert header.split() == ["BoolQ", "PIQA", "SIQA", "HellaSwag", "WinoGrande", "ARC-e", "ARC-c", "OBQA", "Avg."]
    assert list(_table_rows(stdout)) == [(model, name) for model in MODELS for name in FILTERS]
    paper = next(line for line in stdout.splitlines() if line.startswith("paper: LLaMA2-7B DoRA r=32"))
    assert [float(cell) for cell in paper.split()[-9:]] == PAPER_LLAMA2_7B_DORA
    assert "dora sft --config llama2_7b_dora" in stdout and "dora analyze --base" in stdout
    assert "lm_eval --model hf --model_args pretrained=meta-llama/Llama-2-7b-hf,peft=" in stdout
    assert _step_labels(stdout) == [f"[{step}/6]" for step in range(1, 7)]  # each step once, merge included
    steps = f"{QUICK.max_steps}/{QUICK.max_steps}"
    for bar in ("Running generate_until requests", steps, "Analyzing checkpoints"):  # progress bars
        assert bar in stderr


@pytest.mark.slow
def test_quick_demo_keeps_loadable_lora_and_dora_adapters_and_merged_models(quick_demo):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    output, _, _ = quick_demo
    for preset, label in demo.METHODS:
        config = _load(output / preset / "adapter_config.json")
        assert config["peft_type"] == "LORA" and config["use_dora"] is (label == "DoRA")
        assert config["base_model_name_or_path"] == str(output / "base")
        steps = sorted(int(p.name.split("-")[1]) for p in (output / preset).glob("checkpoint-*"))
        assert steps == [QUICK.max_steps // 2, QUICK.max_steps]
        base = AutoModelForCausalLM.from_pretrained(output / "base")
        merged = AutoModelForCausalLM.from_pretrained(output / f"{preset}-merged")
        adapted = PeftModel.from_pretrained(base, output / preset).eval()  # stock PEFT
        ids = torch.tensor([[5, 17, 42, 99, 3]])
        with torch.no_grad():
            torch.testing.assert_close(merged(ids).logits, adapted(ids).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_quick_demo_results_json_matches_lm_eval_scores(quick_demo):
    output, stdout, _ = quick_demo
    report = _load(output / "results.json")
    table = report["table"]
    assert report["settings"] == json.loads(json.dumps(QUICK.__dict__))
    assert table["items"] == [4] * 8 and list(table["models"]) == MODELS
    printed = _table_rows(stdout)
    for model in MODELS:
        results = report["lm_eval"][model]
        for name in FILTERS:
            entry = table["models"][model][name]
            assert entry["scores"][:8] == [100 * results["results"][task][f"acc,{name}"] for _, task, _ in COLUMNS]
            assert entry["scores"][8] == pytest.approx(100 * results["results"][GROUP][f"acc,{name}"])  # plain mean
            assert sum(entry["unread"]) == printed[(model, name)]
            unread = [
                sum(s["filter"] == name and s["filtered_resps"][0] == "" for s in results["samples"][task])
                for _, task, _ in COLUMNS
            ]
            assert entry["unread"] == unread
    samples = report["lm_eval"][demo.BASE_LABEL]["samples"]["dora_boolq"]
    assert samples[0]["arguments"][0][0].startswith("Below is an instruction that describes a task.")


@pytest.mark.slow
def test_quick_demo_writes_the_dynamics_and_they_match_the_training_log(quick_demo):
    output, stdout, _ = quick_demo
    with open(output / "dynamics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert {(r["run"], r["method"]) for r in rows} == {("lora", "LoRA"), ("dora", "DoRA")}
    last = QUICK.max_steps
    for preset, _ in demo.METHODS:
        # DoraDynamicsCallback logged the same quantities at the last step: the mean over both layers' rows
        log = _load(output / preset / f"checkpoint-{last}" / "trainer_state.json")["log_history"]
        logged = next(entry for entry in log if entry["step"] == last and "dora/q_proj/delta_m" in entry)
        mine = [r for r in rows if r["run"] == preset and r["step"] == str(last) and r["target"] == "q_proj"]
        assert len(mine) == 2
        for key in ("delta_m", "delta_d"):
            assert sum(float(r[key]) for r in mine) / 2 == pytest.approx(logged[f"dora/q_proj/{key}"], rel=1e-5)
    assert set(_load(output / "dynamics.json")["runs"]) == {"lora", "dora"}
    # the checkpoints are named where they are, in the output folder (not the work folder it was written in)
    for row in [*rows, *_load(output / "dynamics.json")["rows"]]:
        assert Path(row["checkpoint"]).parent.parent == output and Path(row["checkpoint"]).is_dir()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "pip install 'dora-plugins[plot]'" in stdout and not (output / "dynamics.png").exists()
    else:
        assert (output / "dynamics.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_full_demo_learns_the_answer_format_on_every_benchmark(tmp_path):
    """After training, LoRA and DoRA answer in the trained format: at most 2 unread answers of 40 per benchmark."""
    stdout, _ = _run_demo(tmp_path / "run", "--tiny")
    table = _load(tmp_path / "run" / "results.json")["table"]
    assert table["items"] == [EVAL_ITEMS] * 8
    for name in FILTERS:
        assert sum(table["models"][demo.BASE_LABEL][name]["unread"]) > 0.8 * 8 * EVAL_ITEMS
        for _, label in demo.METHODS:
            assert max(table["models"][label][name]["unread"]) <= 2, (label, name, table["models"][label][name])


def test_without_output_the_work_folder_is_removed_and_failures_propagate(monkeypatch, capsys):
    from dora_plugins.errors import DataError

    seen = []

    def fake_run(workdir, settings, model, started, final=None, fail=False):
        (workdir / "results.json").write_text("{}")
        seen.append((workdir, settings, model))
        if fail:
            raise DataError("training failed")
        return []

    monkeypatch.setattr(demo, "run", fake_run)
    assert demo.main(["--quick"]) == 0
    workdir, settings, model = seen[-1]
    assert settings == QUICK and model is None and not workdir.exists()
    assert "Pass --output DIR to keep" in capsys.readouterr().out

    monkeypatch.setattr(demo, "run", lambda workdir, settings, model, started: fake_run(
        workdir, settings, model, started, fail=True))  # fmt: skip
    with pytest.raises(DataError, match="training failed"):
        demo.main([])
    assert seen[-1][1:] == (REAL, demo.DEFAULT_MODEL) and not seen[-1][0].exists()
    assert "Next, with a real model" not in capsys.readouterr().out


def test_a_failed_run_leaves_an_existing_output_as_it_was(monkeypatch, tmp_path):
    from dora_plugins.errors import DataError

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.json").write_text("previous run")

    def failing_run(workdir, settings, model, started, final=None):
        (workdir / "results.json").write_text("half")
        raise DataError("training failed")

    monkeypatch.setattr(demo, "run", failing_run)
    with pytest.raises(DataError):
        demo.main(["--output", str(tmp_path / "out"), "--overwrite"])
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (tmp_path / "out" / "results.json").read_text() == "previous run"


def _step_labels(stdout: str) -> list[str]:
    import re

    return re.findall(r"^\[\d+/\d+\]", stdout, flags=re.MULTILINE)


def test_steps_are_numbered_once_each_five_for_a_real_model_six_when_merging(capsys):
    for settings, total in ((REAL, 5), (QUICK, 6)):
        plan = Plan(settings)
        for title in range(total):
            plan.step(str(title))
        assert _step_labels(capsys.readouterr().out) == [f"[{n}/{total}]" for n in range(1, total + 1)]


def test_closing_message_names_dynamics_png_only_when_it_was_drawn(tmp_path):
    drawn = demo.next_steps(str(tmp_path), ["dynamics.png"], REAL)
    assert "dynamics.png" in drawn and "lora/ and dora/ (PEFT adapters" in drawn and "merged" not in drawn
    not_drawn = demo.next_steps(str(tmp_path), [], QUICK)  # matplotlib missing: no figure
    assert "dynamics.png" not in not_drawn and "dynamics.csv and dynamics.json" in not_drawn
    assert "lora-merged/" in not_drawn


SHORT = Settings(**{**REAL.__dict__, "max_steps": 3, "limit": 2, "text_limit": 2, "checkpoints": 3})


@pytest.mark.parametrize(("argv", "expected"), [
    ([], REAL),
    (["--tiny"], demo.TINY),
    (["--quick"], QUICK),
    (["--max_steps", "3", "--limit", "2"], SHORT),
    (["--text_limit", "0"], Settings(**{**REAL.__dict__, "text_limit": None, "groups": ("dora_commonsense",)})),
    (["--tiny", "--text_limit", "5"], Settings(**{**demo.TINY.__dict__, "text_limit": 5,
                                                  "groups": ("dora_commonsense", "dora_commonsense_text")})),
])  # fmt: skip
def test_settings_per_mode_and_shortening_flags(argv, expected):
    assert demo.settings_for(demo.make_parser().parse_args(argv)) == expected


@pytest.mark.parametrize(
    "argv", [["--max_steps", "0"], ["--limit", "41"], ["--limit", "0"], ["--text_limit", "-1"], ["--threads", "0"]]
)
def test_out_of_range_shortening_is_a_one_line_error(argv, capsys):
    from dora_plugins.cli import main as dora

    assert dora(["demo", *argv]) == 2
    error = capsys.readouterr().err
    assert error.startswith("dora demo: error: ") and argv[0] in error and len(error.strip().splitlines()) == 1


def test_both_adapters_get_the_same_budget_and_the_real_run_scores_option_text_too():
    from dora_plugins.cli.demo_settings import GENERATION, OPTION_TEXT

    assert REAL.groups == (GENERATION, OPTION_TEXT) and not REAL.tiny and not REAL.merge
    assert REAL.batch_size % REAL.micro_batch == 0 and REAL.budget_minutes == 15
    assert [preset for preset, _ in demo.METHODS] == ["lora", "dora"]  # one Settings for both


@pytest.mark.slow
def test_real_model_demo_trains_scores_and_keeps_a_peft_dora_adapter(tmp_path):
    """The default demo's code path on the real SmolLM2, shortened to 2 steps and 1 item per benchmark."""
    real_model_path()  # skips where the model cannot be pulled (fails under DORA_REQUIRE_REAL_MODEL=1)
    output = tmp_path / "run"
    stdout, stderr = _run_demo(output, "--max_steps", "2", "--limit", "1")
    assert _step_labels(stdout) == [f"[{n}/5]" for n in range(1, 6)]
    config = _load(output / "dora" / "adapter_config.json")  # the DoRA adapter, outside any checkpoint-*
    assert config["peft_type"] == "LORA" and config["use_dora"] is True
    assert _load(output / "lora" / "adapter_config.json")["use_dora"] is False
    assert (output / "dora" / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in (output / "dora").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    accumulation = REAL.batch_size // REAL.micro_batch  # one record per forward pass, as many passes per step
    assert stdout.count(f"effective batch: {REAL.batch_size} (= {REAL.micro_batch} per device x {accumulation} ") == 2
    report = _load(output / "results.json")
    assert report["model"] == demo.DEFAULT_MODEL and report["table"]["items"] == [1] * 8
    for label in MODELS:
        entry = report["table"]["models"][label]
        assert list(entry) == ["improved", "original", "option text acc", "option text acc_norm"]
        assert all(0 <= score <= 100 for cells in entry.values() for score in cells["scores"])
        lm = report["lm_eval"][label]
        assert lm["configs"]["dora_boolq"]["generation_kwargs"]["num_beams"] == REAL.num_beams
    # LoRA's and DoRA's generations come from their adapters: the three runs' samples are not all alike
    samples = [report["lm_eval"][label]["samples"]["dora_boolq_text"][0]["resps"] for label in MODELS]
    assert samples[0] != samples[1] and samples[0] != samples[2]
    assert {row["checkpoint"].rsplit("/", 2)[0] for row in _load(output / "dynamics.json")["rows"]} == {str(output)}
    assert "Analyzing checkpoints" in stderr and "Running generate_until requests" in stderr
    assert "Running loglikelihood requests" in stderr
    assert "Budget: 15 min on 2 idle CPU cores" in stdout and "CPU threads:" in stdout
    phases = [row["phase"] for row in report["timing"]["phases"]]
    assert phases[:3] == ["base model (pull or build)", "train LoRA", "train DoRA"] and phases[-1] == "analyze"
    assert "score DoRA: option text" in phases and report["timing"]["budget_s"] == 60 * REAL.budget_minutes
    assert any(line.startswith("Elapsed ") and "budget" in line for line in stdout.splitlines())


def test_clock_times_each_phase_and_checks_the_total_against_the_budget(monkeypatch):
    from dora_plugins.cli import demo_clock

    ticks = iter([(0.0, 0.0), (0.0, 0.0), (90.0, 60.0), (90.0, 60.0), (600.0, 400.0), (700.0, 480.0)])
    monkeypatch.setattr(demo_clock, "_now", lambda: next(ticks))
    clock = demo_clock.Clock(budget_s=660)
    with clock.phase("train LoRA"):
        pass
    with clock.phase("score LoRA: generation"):
        pass
    assert [(p["phase"], p["wall_s"], p["cpu_s"]) for p in clock.phases] == [
        ("train LoRA", 90.0, 60.0),
        ("score LoRA: generation", 510.0, 340.0),
    ]
    text = clock.format()  # the total is read once more: 700 s wall, 480 s CPU
    assert "train LoRA" in text and "score LoRA: generation" in text
    assert text.splitlines()[-1].startswith("Elapsed 11.7 min (8.0 min CPU): OVER the 11-minute budget")
    assert demo_clock.budget_line(600, 400, 660) == "Elapsed 10.0 min (6.7 min CPU): within the 11-minute budget " \
        "(2 idle CPU cores)."  # fmt: skip
    assert "no budget is stated" in demo_clock.budget_line(60, 60, None)


@pytest.mark.parametrize(("requested", "tiny", "load", "threads"), [
    (3, False, 0.0, 3),  # --threads wins
    (None, True, 0.0, 1),  # the tiny model: one thread
    (None, False, 0.1, 2),  # an idle 2-core machine: both cores
    (None, False, 1.2, 1),  # one core busy with another job: one thread
    (None, False, 6.0, 1),  # a crowded machine: still one
])  # fmt: skip
def test_threads_follow_the_idle_cores_unless_chosen(monkeypatch, requested, tiny, load, threads):
    from dora_plugins.cli import demo_clock

    monkeypatch.setattr(demo_clock.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(demo_clock.os, "getloadavg", lambda: (load, load, load))
    assert demo_clock.choose_threads(requested, tiny)[0] == threads


def test_the_readmes_demo_run_folder_is_ignored_by_git():
    from helpers import REPO

    assert "/demo-run/" in (REPO / ".gitignore").read_text().splitlines()
    if (REPO / ".git").exists():  # a clone (a worktree has a .git file): ask git itself
        result = subprocess.run(["git", "check-ignore", "-q", "demo-run/results.json"], cwd=REPO, check=False)
        assert result.returncode == 0
