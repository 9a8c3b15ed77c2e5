"""Smoke tests of the scripts in benchmarks/ at tiny sizes (the real runs take minutes; see README Performance)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import generate  # noqa: E402
import layer  # noqa: E402
import profile_step  # noqa: E402
import train_step  # noqa: E402
import workload  # noqa: E402

TINY = ["--hidden", "64", "--layers", "1", "--vocab", "128", "--rank", "4", "--threads", "1"]


@pytest.mark.parametrize("dropout", ["0.0", "0.05"])
def test_train_step_prints_times_and_the_ratios_of_its_dropout_mode(capsys, dropout):
    argv = [*TINY, "--batch", "2", "--seq", "8", "--reps", "1", "--warmup", "0", "--memory-steps", "0"]
    assert train_step.main([*argv, "--dropout", dropout]) in (0, 1)
    out = capsys.readouterr().out
    target = "time ours/lora" if dropout == "0.0" else "time ours/peft_dora"
    assert f"{target} " in out and "(target <= " in out.split(target)[1].splitlines()[0]
    assert f"targets for dropout {float(dropout)}:" in out


def test_train_step_memory_child_reports_a_peak_growth(capsys):
    argv = [*TINY, "--batch", "2", "--seq", "8", "--memory-steps", "1", "--memory-of", "ours"]
    assert train_step.main(argv) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["peak_growth"] >= 0


PEAK_OF_16_MIB = """
import torch, workload
with workload.PeakMemory("cpu") as peak:
    block = torch.ones(16 * 2**20 // 4)  # 16 MiB, touched
    del block
print(peak.growth)
"""


def test_peak_memory_sees_a_large_allocation():
    # A fresh process: in a long test session the allocator may hand back pages that are already resident.
    env = {**os.environ, "PYTHONPATH": str(REPO / "benchmarks")}
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
