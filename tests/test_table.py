"""``dora table`` on the output of real ``lm_eval`` runs of a tiny model: the paper's protocol, and a greedy,
``--limit`` run that must be marked as such. Numbers are checked against lm-eval's own (per task and the
groups' means) and unread counts against the extractors run again on the logged generations."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import REPO

from dora_plugins.benchmarks import BENCHMARKS, load_llm_adapters
from dora_plugins.cli import main as dora
from dora_plugins.cli.demo_model import build_model, build_tokenizer
from dora_plugins.extract import extract_answer
from dora_plugins.prompts import eval_prompt
from dora_plugins.table import COLUMNS, PAPER_TABLE_1, read_table, reference_rows, rows_from_results
from dora_plugins.table_formats import render

SAMPLE = REPO / "dora_plugins" / "demo_data" / "eval"  # 40 real items per benchmark, shipped with the package
ITEMS = 8  # per benchmark: the first items of the sample
HEADER = ["Run", "Method", *COLUMNS, "Unread", "Protocol"]
ALL_GROUPS = ["dora_commonsense", "dora_commonsense_mc", "dora_commonsense_text"]
METHODS = ["improved", "original", "mc", "text", "text_norm"]  # the rows of a run of ALL_GROUPS
# method -> (lm-eval task of a benchmark, metric, group)
SCORED = {
    "improved": (lambda b: b.task, "acc,improved", "dora_commonsense"),
    "original": (lambda b: b.task, "acc,original", "dora_commonsense"),
    "mc": (lambda b: b.mc_task, "acc,none", "dora_commonsense_mc"),
    "text": (lambda b: b.text_task, "acc,none", "dora_commonsense_text"),
    "text_norm": (lambda b: b.text_task, "acc_norm,none", "dora_commonsense_text"),
}


def lm_eval(model, data_dir, output, *options: str) -> None:
    cmd = [
        "lm_eval", "--model", "hf", "--model_args", f"pretrained={model},dtype=float32", "--device", "cpu",
        "--batch_size", "8", "--metadata", json.dumps({"data_dir": str(data_dir)}), "--log_samples",
        "--output_path", str(output), *options,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=output.parent, timeout=900)
    assert result.returncode == 0, result.stderr[-5000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two real lm_eval runs of one tiny model: the paper's protocol on both groups, and a greedy --limit run."""
    root = tmp_path_factory.mktemp("table")
    for b in BENCHMARKS:
        (root / "data" / b.name).mkdir(parents=True)
        items = json.loads((SAMPLE / b.name / "test.json").read_text())[:ITEMS]
        (root / "data" / b.name / "test.json").write_text(json.dumps(items))
    prompts = [eval_prompt(item["instruction"]) for b in BENCHMARKS for item in load_llm_adapters(SAMPLE, b.name)]
    tokenizer = build_tokenizer(prompts, vocab_size=512)
    model = build_model(tokenizer, seed=0)
    with torch.no_grad():
        model.model.embed_tokens.weight[tokenizer.eos_token_id] *= 3.0  # short answers: a faster beam search
    model.save_pretrained(root / "tiny")
    tokenizer.save_pretrained(root / "tiny")
    lm_eval(root / "tiny", root / "data", root / "paper", "--tasks", ",".join(ALL_GROUPS))
    lm_eval(
        root / "tiny",
        root / "data",
        root / "greedy",
        "--tasks",
        "dora_commonsense",
        "--gen_kwargs",
        "num_beams=1",
        "--limit",
        "3",
    )
    return root


def results_file(folder):
    (path,) = folder.glob("*/results_*.json")
    return path


def samples(folder, task: str) -> tuple:
    """The samples file lm-eval logged for ``task`` in the run of ``folder``, and its rows."""
    stamp = results_file(folder).stem.removeprefix("results_")
    (path,) = folder.glob(f"*/samples_{task}_{stamp}.jsonl")
    return path, [json.loads(line) for line in path.read_text().splitlines()]


def unread_again(folder, method: str) -> int:
    """Answers the extractor cannot read, extracted again from the raw generations lm-eval logged."""
    return sum(
        extract_answer(sample["resps"][0][0], b.name, method, sample["doc"]["options"]) == ""
        for b in BENCHMARKS
        for sample in samples(folder, b.task)[1]
        if sample["filter"] == method
    )


@pytest.mark.slow
def test_rows_give_lm_evals_accuracies_and_means_and_count_unread_answers(runs):
    path = results_file(runs / "paper")
    results = json.loads(path.read_text())["results"]
    rows = rows_from_results(path)
    assert [(row.run, row.method) for row in rows] == [("tiny", method) for method in METHODS]
    for row in rows:
        assert row.protocol == () and row.protocol_text == "paper"
        task_of, metric, group = SCORED[row.method]
        for b in BENCHMARKS:
            assert row.scores[b.title] == pytest.approx(100 * results[task_of(b)][metric])
        # the paper's Avg. is lm-eval's group mean (not weighted by size)
        assert row.average == pytest.approx(100 * results[group][metric])
    assert rows[0].unread == unread_again(runs / "paper", "improved")
    assert rows[1].unread == unread_again(runs / "paper", "original")
    assert rows[0].unread > 0 and rows[1].unread > 0  # a random model: answers neither extractor reads
    assert [row.unread for row in rows[2:]] == [None] * 3  # log-likelihood scoring reads no answer
    assert all(0 < row.average < 100 for row in rows[2:])
    assert rows[3].scores != rows[4].scores or rows[3].scores != rows[2].scores  # three different scorings


@pytest.mark.slow
def test_a_greedy_limited_run_is_marked_and_runs_of_one_model_are_told_apart(runs):
    rows = read_table([runs / "greedy", runs / "paper"])
    greedy_stamp = results_file(runs / "greedy").stem.removeprefix("results_")
    assert [row.method for row in rows] == ["improved", "original", *METHODS]
    assert rows[0].run == f"tiny ({greedy_stamp})" and rows[2].run != rows[0].run
    assert rows[0].protocol == rows[1].protocol == ("greedy", f"limit 3 of {ITEMS}")
    assert [row.protocol for row in rows[2:]] == [()] * len(METHODS)


@pytest.mark.slow
def test_dora_table_prints_text_and_markdown(runs, capsys):
    path = results_file(runs / "paper")
    rows = rows_from_results(path)
    assert dora(["table", str(runs / "paper")]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split() == HEADER
    for line, row in zip(lines, rows, strict=True):
        cells = line.split()
        assert cells[:2] == ["tiny", row.method] and cells[-1] == "paper"
        assert cells[2:11] == [f"{value:.1f}" for value in row.cells()]
        assert cells[11] == ("-" if row.unread is None else str(row.unread))
    assert dora(["table", str(path), "--format", "markdown", "--reference", "LLaMA2-7B"]) == 0
    markdown = capsys.readouterr().out.splitlines()
    assert [cell.strip() for cell in markdown[0].strip("|").split("|")] == HEADER
    assert markdown[1].startswith("| ---") and len(markdown) == 2 + len(METHODS) + 3
    assert markdown[-1].split("|")[1:4] == [" paper: LLaMA2-7B ", " DoRA r=32  ", "  71.8 "]


@pytest.mark.slow
def test_csv_and_json_keep_the_numbers_and_latex_comes_from_pytablewriter(runs, capsys):
    rows = read_table([runs / "paper"], ["LLaMA-7B"])
    assert dora(["table", str(runs / "paper"), "--reference", "LLaMA-7B", "--format", "csv"]) == 0
    records = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["Method"] for r in records] == [*METHODS, *PAPER_TABLE_1["LLaMA-7B"]]
    assert float(records[2]["Avg."]) == pytest.approx(rows[2].average, abs=1e-4)
    assert records[3]["Unread"] == "" and records[3]["Protocol"] == "paper"
    assert dora(["table", str(runs / "paper"), "--format", "json"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert [(r["method"], r["scores"], r["average"], r["unread"]) for r in parsed] == [
        (row.method, row.scores, row.average, row.unread) for row in rows[: len(METHODS)]
    ]
    latex = render(rows, "latex")
    assert latex.startswith("\\begin{array}") and latex.endswith("\\end{array}")


@pytest.mark.slow
@pytest.mark.parametrize(("change", "note"), [
    (lambda r, s: r["configs"]["dora_piqa"]["generation_kwargs"].update(max_gen_toks=64), "max_gen_toks=64"),
    (lambda r, s: r["configs"]["dora_piqa"]["generation_kwargs"].update(do_sample=True), "sampling"),
    (lambda r, s: r["configs"]["dora_boolq"].update(num_fewshot=5), "5-shot"),
    (lambda r, s: r.update(chat_template="{{ messages }}"), "chat template"),
    (lambda r, s: r.update(system_instruction="Be brief."), "system instruction"),
    (lambda r, s: s[0]["arguments"]["gen_args_0"].update(arg_0="Q: x\nA:"), "another prompt"),
])  # fmt: skip
def test_any_departure_from_the_papers_protocol_is_marked(runs, tmp_path, change, note):
    source = results_file(runs / "paper")
    copy = tmp_path / source.parent.name
    shutil.copytree(source.parent, copy)
    results = json.loads((copy / source.name).read_text())
    path, rows = samples(tmp_path, "dora_piqa")
    change(results, rows)
    (copy / source.name).write_text(json.dumps(results))
    path.write_text("\n".join(map(json.dumps, rows)))
    improved = rows_from_results(copy / source.name)[0]
    assert note in improved.protocol


def test_reference_rows_are_the_papers_table_1():
    rows = reference_rows(["llama3-8b"])  # any case
    assert [(row.run, row.method) for row in rows] == [
        ("paper: LLaMA3-8B", "LoRA r=32"), ("paper: LLaMA3-8B", "DoRA† r=16"), ("paper: LLaMA3-8B", "DoRA r=32"),
    ]  # fmt: skip
    assert rows[2].cells() == [74.6, 89.3, 79.9, 95.5, 85.6, 90.5, 80.4, 85.8, 85.2]
    for model in PAPER_TABLE_1.values():
        for numbers in model.values():  # the printed average is the mean of the eight, to the paper's rounding
            assert sum(numbers[:8]) / 8 == pytest.approx(numbers[8], abs=0.051)
    assert len(reference_rows(["all", "LLaMA-7B"])) == 9


@pytest.mark.parametrize(("argv", "message"), [
    (["nowhere"], "nowhere does not exist. Pass lm-eval's --output_path folder or a results file."),
    (["{empty}"], "holds no lm-eval results file (results_*.json)"),
    (["{notes}"], "is not an lm-eval results file: it has no 'results', 'configs', 'config'"),
    (["{broken}"], "is not a readable JSON file"),
    (["{empty}", "--reference", "LLaMA2"], "The paper has no model 'LLaMA2'. Did you mean 'LLaMA2-7B'?"),
    (["{empty}", "--plot", "{notes}"], "--plot {notes}: name an image file (.png, .pdf, .svg or .jpg)"),
    (["{empty}", "--plot", "{empty}/../table.png"], "--plot {empty}/../table.png exists. Pass --overwrite"),
])  # fmt: skip
def test_bad_input_is_named_and_exits_2(tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "table.png").write_bytes(b"not mine")
    (tmp_path / "notes.json").write_text('{"note": "x"}')
    (tmp_path / "broken.json").write_text("{")
    names = {"empty": tmp_path / "empty", "notes": tmp_path / "notes.json", "broken": tmp_path / "broken.json"}
    assert dora(["table", *(arg.format_map(names) for arg in argv)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("dora table: error: ") and message.format_map(names) in error
    assert (tmp_path / "table.png").read_bytes() == b"not mine"  # nothing it did not write is touched


def write_run(folder, results: dict, samples: dict[str, str]):
    """A results file and samples files as lm-eval names them (the content is the test's)."""
    folder.mkdir(parents=True)
    stamp = "2026-01-01T00-00-00.000000"
    for task, text in samples.items():
        (folder / f"samples_{task}_{stamp}.jsonl").write_text(text)
    path = folder / f"results_{stamp}.json"
    path.write_text(json.dumps({"configs": {}, "config": {"model_args": {"pretrained": "m"}}, **results}))
    return path


def test_results_without_our_tasks_are_an_error_that_says_what_to_run(tmp_path, capsys):
    write_run(tmp_path / "run" / "m", {"results": {"hellaswag": {"acc,none": 0.5}}}, {})
    assert dora(["table", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert "No results of the dora_commonsense, dora_commonsense_mc or dora_commonsense_text tasks in" in error
    assert error.strip().endswith("Run lm_eval with --tasks dora_commonsense,dora_commonsense_text")


@pytest.mark.parametrize(("line", "problem"), [
    ("{not json", "the sample is not JSON"),
    ('{"doc": {"instruction": "q"}, "filtered_resps": [""]}', "the sample lacks 'arguments'"),
    ('{"doc": {"instruction": "q"}, "arguments": {"gen_args_0": {"arg_0": 1}}, "filtered_resps": [""]}',
     "the sample's instruction, prompt and filtered_resps must be text"),
])  # fmt: skip
def test_a_malformed_logged_sample_is_named_by_file_and_line(tmp_path, capsys, line, problem):
    good = {"doc": {"instruction": "q"}, "arguments": {"gen_args_0": {"arg_0": "p"}}, "filtered_resps": [""]}
    results = {"results": {"dora_boolq": {"acc,improved": 0.5}}}
    path = write_run(tmp_path / "m", results, {"dora_boolq": json.dumps(good) + "\n\n" + line + "\n"})
    assert dora(["table", str(path)]) == 2
    samples_file = next((tmp_path / "m").glob("samples_*"))
    assert capsys.readouterr().err.startswith(f"dora table: error: {samples_file}, line 3: {problem}")


@pytest.mark.slow
def test_plot_draws_a_png_and_without_matplotlib_the_table_still_prints(runs, tmp_path):
    pytest.importorskip("matplotlib", reason="the plot extra: pip install 'dora-plugins[plot]'")
    target = tmp_path / "table.png"
    assert dora(["table", str(runs / "paper"), "--reference", "LLaMA2-7B", "--plot", str(target)]) == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"  # as if the extra were not installed
        "from dora_plugins.cli import main\n"
        f"raise SystemExit(main(['table', {str(runs / 'paper')!r}, '--plot', {str(tmp_path / 'other.png')!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stdout.splitlines()[0].split() == HEADER  # the table came first
    assert result.stderr.strip() == (
        "dora table: error: --plot needs matplotlib, an optional extra: pip install 'dora-plugins[plot]'. "
        "The table above is complete; only the plot was not drawn."
    )
    assert not (tmp_path / "other.png").exists()
