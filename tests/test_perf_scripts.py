"""Smoke tests of the speed scripts in perf/ at tiny sizes (the real runs take minutes; see docs/performance.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import REPO

from perf import generate, layer, matrix, matrix_report, profile_step, train_step, workload

TINY = ["--hidden", "64", "--layers", "1", "--vocab", "128", "--rank", "4", "--threads", "1"]
TINY_STEP = [*TINY, "--batch", "2", "--seq", "8", "--reps", "1", "--warmup", "0", "--memory-steps", "0"]


def ratios(out: str, label: str) -> list[float]:
    """The values of every ``label  1.023  (target ...)`` line that ``workload.ratio_line`` printed."""
    values = [float(line[len(label) :].split()[0]) for line in out.splitlines() if line.startswith(label + " ")]
    assert values, f"no line starts with {label!r}:\n{out}"
    assert all(0 < value < float("inf") for value in values), values
    return values


@pytest.mark.parametrize("dropout", ["0.0", "0.05"])
def test_train_step_prints_times_and_the_ratios_of_its_dropout_mode(capsys, dropout):
    assert train_step.main([*TINY_STEP, "--dropout", dropout]) in (0, 1)
    out = capsys.readouterr().out
    target = "time ours/lora" if dropout == "0.0" else "time ours/peft_dora"
    assert f"{target} " in out and "(target <= " in out.split(target)[1].splitlines()[0]
    assert f"targets for dropout {float(dropout)}:" in out


def test_train_step_compiled_columns_give_finite_ratios(capsys):
    """The eager backend and one candidate: dynamo alone traces it in seconds (inductor takes a minute)."""
    argv = [*TINY_STEP, "--compile", "--compile-backend", "eager", "--candidates", "ours"]
    assert train_step.main(argv) in (0, 1)
    out = capsys.readouterr().out
    row = next(line.split() for line in out.splitlines() if line.startswith("ours "))
    assert all(float(cell) > 0 for cell in row[1:4]), row  # eager, compiled, compiling
    assert "(target <= 1.00: " in out.split("compiled/eager ours")[1].splitlines()[0]
    ratios(out, "compiled/eager ours")


def test_train_step_times_the_lora_branch_dropout_mode_beside_the_paper_one(capsys):
    candidates = ["--candidates", "lora", "peft_dora", "ours", "ours_branch"]
    argv = [*TINY_STEP, "--dropout", "0.05", *candidates, "--clock", "cpu"]
    assert train_step.main(argv) in (0, 1)
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines() if line.startswith("ours_branch ")] == ["ours_branch"]
    ratios(out, "time ours_branch/ours")
    ratios(out, "time ours_branch/lora")


def test_train_step_memory_child_reports_a_peak_growth(capsys):
    argv = [*TINY, "--batch", "2", "--seq", "8", "--memory-steps", "1", "--memory-of", "ours"]
    assert train_step.main(argv) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["peak_growth"] >= 0


PEAK_OF_16_MIB = """
import torch
from perf import workload
with workload.PeakMemory("cpu") as peak:
    block = torch.ones(16 * 2**20 // 4)  # 16 MiB, touched
    del block
print(peak.growth)
"""


def test_peak_memory_sees_a_large_allocation():
    # A fresh process: in a long test session the allocator may hand back pages that are already resident.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", PEAK_OF_16_MIB], capture_output=True, text=True, env=env, check=True)
    assert int(out.stdout.split()[-1]) >= 15 * 2**20


def test_layer_benchmark_checks_the_norms_agree_and_reports_the_speed_up(capsys):
    assert layer.main(["--features", "64", "--tokens", "32", "--reps", "1", "--threads", "1"]) in (0, 1)
    assert "norm speed-up peft_dora/ours" in capsys.readouterr().out


def test_generate_benchmark_reports_time_per_token(capsys):
    argv = [*TINY, "--prompt", "4", "--new-tokens", "3", "--reps", "1"]
    assert generate.main(argv) in (0, 1)
    out = capsys.readouterr().out
    assert "ours unmerged/lora" in out and "ours_merged" in out


@pytest.mark.slow
def test_matrix_lm_eval_rows_time_generate_until_per_token_and_count_answers_differing_from_peft(tmp_path):
    """lm-eval's own generate_until on the three candidates: per-token times, and the answers of ours are PEFT's."""
    output = tmp_path / "lm_eval.json"
    assert matrix.main(["--quick", "--no-train", "--generation", "lm_eval", "--output", str(output)]) == 0
    rows = json.loads(output.read_text())["rows"]
    assert [(row["kind"], row["mode"]) for row in rows] == [("lm_eval", "greedy"), ("lm_eval", "beams4")]
    for row in rows:
        assert row["answers"] == {"differ": 0, "of": 2, "tokens": 3} and row["dtype"] == "float32"
        assert set(row["seconds"]) == set(workload.CANDIDATES)
        assert all(value > 0 for values in row["seconds"].values() for value in values), row
        assert matrix_report.verdict(row) in ("met", "NOT met: time ours/lora")


def test_lm_eval_requests_are_forced_to_their_length_and_every_id_decodes():
    from perf import lm_eval_generate

    instances = lm_eval_generate.requests(2)
    forced = lm_eval_generate.forced_length(instances, 4, 5)
    assert [i.args[0] for i in forced] == [i.args[0] for i in instances]
    assert all(i.args[1]["num_beams"] == 4 and i.args[1]["max_gen_toks"] == i.args[1]["min_new_tokens"] == 5
               for i in forced)  # fmt: skip
    tokenizer = lm_eval_generate.tokenizer(600)
    assert len(tokenizer) == 600 and tokenizer.convert_ids_to_tokens(599).startswith("<filler_")
    with pytest.raises(SystemExit, match="the prompt tokenizer has"):
        lm_eval_generate.tokenizer(200)  # a vocabulary smaller than the byte alphabet


def test_profile_step_splits_time_and_counts_saved_activations(capsys):
    assert profile_step.main([*TINY, "--batch", "2", "--seq", "8", "--reps", "1", "--dropout", "0.05"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [row[0] for row in rows] == list(workload.CANDIDATES)
    assert all(float(row[3]) > 0 for row in rows)


def test_cuda_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit, match="--device cuda"):
        train_step.main([*TINY, "--device", "cuda", "--memory-steps", "0"])


def test_a_cpu_clock_with_cuda_is_a_clear_error():
    with pytest.raises(SystemExit, match="--clock cpu does not see the time a GPU works"):
        train_step.main([*TINY, "--device", "cuda", "--clock", "cpu", "--memory-steps", "0"])


def test_kbit_benchmarks_run_on_a_4bit_base(capsys):
    pytest.importorskip("bitsandbytes")
    assert train_step.main([*TINY_STEP, "--bits", "4"]) in (0, 1)
    ratios(capsys.readouterr().out, "time ours/peft_dora")
    assert generate.main([*TINY, "--bits", "4", "--prompt", "4", "--new-tokens", "3", "--reps", "1"]) in (0, 1)
    ratios(capsys.readouterr().out, "ours unmerged/peft_dora")


@pytest.mark.slow
def test_matrix_quick_writes_every_row_and_compares_two_runs(tmp_path, capsys):
    """The reduced matrix CI runs: every mode, eager and compiled, train and generate; JSON, --compare, Markdown."""
    first, page = tmp_path / "matrix.json", tmp_path / "performance.md"
    page.write_text("# Performance\n\nprose kept\n")
    assert matrix.main(["--quick", "--output", str(first), "--markdown", str(page)]) == 0
    results = json.loads(first.read_text())
    keys = {(row["kind"], row["mode"], row["compiled"]) for row in results["rows"]}
    train = {("train", mode, compiled) for mode in matrix.MODES for compiled in (False, True)}
    generation = {(kind, mode, False) for kind in matrix.GENERATION_KINDS for mode in matrix.GENERATION}
    assert keys == train | generation
    assert [row["answers"]["of"] for row in results["rows"] if row["kind"] == "lm_eval"] == [2, 2]
    for row in results["rows"]:
        assert set(row["seconds"]) == {"lora", "peft_dora", "ours"}
        assert all(value > 0 for values in row["seconds"].values() for value in values), row
    eager = [row for row in results["rows"] if row["kind"] == "train" and not row["compiled"]]
    assert all(row["memory_mib"]["saved"]["ours"] > 0 for row in eager)
    out = capsys.readouterr().out
    table = [line.split() for line in out.split("compare:")[0].splitlines() if line.startswith("tiny ")]
    assert len(table) == len(results["rows"]) and all(float(cells[5]) > 0 for cells in table)  # time ours/lora
    assert [" ".join(cells[-4:-1]) for cells in table if cells[1] == "lm_eval" and cells[-1] == "met"] == [
        "0 of 2" for cells in table if cells[1] == "lm_eval" and cells[-1] == "met"
    ]
    text = page.read_text()
    assert text.startswith("# Performance\n\nprose kept\n") and matrix_report.BEGIN in text
    assert text.count("| tiny |") == len(results["rows"])
    # a render with --compare adds the comparison to the section; one without replaces the section again
    assert matrix.main(["--render", str(first), "--compare", str(first), "--markdown", str(page)]) == 0
    assert "(+0.000)" in capsys.readouterr().out
    assert page.read_text().count("| +0.000 |") == 2 * (len(results["rows"]) + len(eager))  # time and saved ratios
    assert matrix.main(["--render", str(first), "--markdown", str(page)]) == 0
    assert page.read_text() == text


def test_matrix_ratios_are_taken_per_repetition_and_judged_on_the_median():
    row = {"kind": "train", "mode": "dropout0", "workload": "w", "compiled": False, "memory_mib": {},
           "seconds": {"lora": [1.0, 2.0, 1.0], "peft_dora": [2.0, 2.0, 2.0], "ours": [1.04, 2.2, 1.2]}}  # fmt: skip
    assert matrix_report.ratios(row)["time ours/lora"] == pytest.approx([1.04, 1.1, 1.2])
    assert matrix_report.spread([1.04, 1.1, 1.2]) == "1.100 [1.040-1.200]"
    assert matrix_report.verdict(row) == "NOT met: time ours/lora"
    row["seconds"]["ours"] = [1.0, 2.0, 1.04]
    assert matrix_report.verdict(row) == "met"


def test_matrix_lm_eval_rows_fail_on_differing_answers_in_fp32_only_and_take_peft_dora_timed_once():
    row = {"kind": "lm_eval", "mode": "greedy", "workload": "w", "compiled": False, "memory_mib": {},
           "dtype": "float32", "answers": {"differ": 1, "of": 4, "tokens": 16},
           "seconds": {"lora": [1.0, 1.0, 2.0], "peft_dora": [10.0], "ours": [1.0, 1.01, 2.0]}}  # fmt: skip
    assert matrix_report.ratios(row)["time ours/peft_dora"] == pytest.approx([0.1, 0.101, 0.2])
    assert matrix_report.verdict(row) == "NOT met: answers differ from peft_dora"
    assert matrix_report.cells(row)[-2:] == ["1 of 4", "NOT met: answers differ from peft_dora"]
    row["dtype"] = "bfloat16"  # bf16 rounding may change an answer: counted, not judged
    assert matrix_report.verdict(row) == "met" and matrix_report.cells(row)[4] == "bf16"


def test_matrix_runs_made_in_parts_merge_and_compare_side_by_side(tmp_path, capsys):
    """--render and --compare take the parts of a run (workload by workload); both sides go into the page."""

    def part(commit: str, workload: str, ours: list[float], compiled: bool = False) -> dict:
        backend = "inductor" if compiled else None
        meta = {"commit": commit, "date": "d", "device": "cpu", "dtype": "float32", "clock": "cpu", "threads": 1,
                "repetitions": 3, "steps": 1, "compile_backend": backend, "torch": "t"}  # fmt: skip
        row = {"workload": workload, "kind": "train", "mode": "dropout0", "compiled": compiled, "memory_mib": {},
               "seconds": {"lora": [1.0, 1.0, 1.0], "peft_dora": [2.0, 2.0, 2.0], "ours": ours}}  # fmt: skip
        return {"meta": meta, "rows": [row]}

    paths = {}
    for name, results in {
        "old_a": part("aaa", "w1", [1.1, 1.2, 1.3]),
        "old_b": part("aaa", "w2", [1.0, 1.0, 1.0], compiled=True),
        "new_a": part("bbb", "w1", [1.0, 1.02, 1.04]),
        "new_b": part("bbb", "w2", [1.1, 1.1, 1.1], compiled=True),
        "other": part("ccc", "w3", [1.0, 1.0, 1.0]),
    }.items():
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(results))
    page = tmp_path / "page.md"
    argv = ["--render", str(paths["new_a"]), str(paths["new_b"]), "--compare", str(paths["old_a"]), str(paths["old_b"])]
    assert matrix.main([*argv, "--markdown", str(page)]) == 0
    out = capsys.readouterr().out
    assert "commit bbb" in out and "merged from 2 runs" in out and "compiled with inductor" in out
    assert "1.200 [1.100-1.300] -> 1.020 [1.000-1.040]" in out and "(-0.180)" in out and "(+0.100)" in out
    text = page.read_text()
    assert (
        "| w1 | train | dropout0 | no | fp32 | time ours/lora | 1.200 [1.100-1.300] | 1.020 [1.000-1.040] | -0.180 |"
        in text
    )
    assert (
        "| w2 | train | dropout0 | yes | fp32 | time ours/lora | 1.000 [1.000-1.000] | 1.100 [1.100-1.100] | +0.100 |"
        in text
    )
    with pytest.raises(SystemExit, match="different commits"):
        matrix.main(["--render", str(paths["new_a"]), str(paths["other"])])
    capsys.readouterr()
    assert matrix.main(["--render", str(paths["new_a"]), str(paths["other"]), "--mixed-commits"]) == 0
    assert "commits bbb: train rows; ccc: train rows;" in capsys.readouterr().out


@pytest.mark.slow
def test_gpu_check_script_runs_its_cpu_dry_run(tmp_path):
    """perf/gpu_check.sh --cpu: the prepared GPU script parses and its Python steps run on the CPU at tiny sizes."""
    script = REPO / "perf" / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    done = subprocess.run([str(script), str(tmp_path), "--cpu"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "every step passed" in done.stdout
    for name in ("bf16_tiny.json", "matrix_eager.json", "matrix_compiled.json"):
        assert (tmp_path / name).stat().st_size > 0
    bf16 = json.loads((tmp_path / "bf16_tiny.json").read_text())
    assert [r["dropout"] for r in bf16["results"]] == [0.0, 0.05] and not any(r["failed"] for r in bf16["results"])


def test_demo_settings_holds_out_training_records_only_and_counts_constant_answers():
    from dora_plugins.cli import demo
    from perf import demo_settings

    kept, held_out = demo_settings.split(demo.TRAIN_FILE)
    assert (len(kept), len(held_out)) == (240, 60)  # the last fifth of each benchmark's records
    assert not {r["instruction"] for r in kept} & {r["instruction"] for r in held_out}
    counts = {b: sum(r["benchmark"] == b for r in held_out) for b, _ in demo_settings.ORDER}
    assert counts == {b: n // 5 for b, n in demo_settings.ORDER}
    # an answerer that always writes its benchmark's first held-out gold label, except on BoolQ
    first = {b: next(r["answer"] for r in held_out if r["benchmark"] == b) for b in counts}
    texts = [f"the correct answer is {first[r['benchmark']]}" for r in held_out]
    texts = [f"the correct answer is {r['answer']}" if r["benchmark"] == "boolq" else t for r, t in
             zip(held_out, texts, strict=True)]  # fmt: skip
    result = demo_settings.report(held_out, texts)
    assert result["constant_benchmarks"] == 7 + (len({r["answer"] for r in held_out if r["benchmark"] == "boolq"}) == 1)
    assert result["rows"]["boolq"]["accuracy"] == 1 and all(row["unread"] == 0 for row in result["rows"].values())
    assert 0 < result["best_constant"] <= 1
