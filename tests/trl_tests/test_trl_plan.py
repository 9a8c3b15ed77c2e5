"""``dora sft --dry_run``: the plan from a config.json and the dataset, for any WORLD_SIZE, offline, writing nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import make_tiny_llama
from peft import get_peft_model

from dora_plugins import adapter_config
from dora_plugins.cli import main as dora_main
from trl_integration.memory import Adapted, layer_bytes, model_shape
from trl_integration.plan import _points_line, step_points

PAPER_RECORDS = 170_420  # LLM-Adapters commonsense_170k.json
LLAMA2_7B_CONFIG = Path(__file__).resolve().parents[1] / "data" / "llama2_7b"  # config.json only, no weights


@pytest.fixture(scope="module")
def paper_sized_dataset(tmp_path_factory):
    """As many records as commonsense_170k.json (their text does not matter to the plan)."""
    path = tmp_path_factory.mktemp("paper") / "commonsense_170k.jsonl"
    path.write_text('{"instruction": "q", "input": "", "output": "the correct answer is true"}\n' * PAPER_RECORDS)
    return path


def _dry_run(tmp_path, dataset, world_size: int | None, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    if world_size:  # what torchrun sets, with no process group to join
        env.update(WORLD_SIZE=str(world_size), RANK="0", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="9")
    command = [
        sys.executable, "-m", "dora_plugins", "sft", "--config", "llama2_7b_dora", "--dry_run",
        "--model_name_or_path", str(LLAMA2_7B_CONFIG), "--dataset_name", str(dataset),
        "--output_dir", str(tmp_path / "run"), *extra,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(("world_size", "per_device"), [(None, 16), (8, 2)])
def test_dry_run_of_the_paper_recipe_plans_the_same_run_on_1_and_8_processes(
    tmp_path, paper_sized_dataset, world_size, per_device
):
    proc = _dry_run(tmp_path, paper_sized_dataset, world_size)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = proc.stdout
    print(plan)
    assert "effective batch: 16" in plan.splitlines()[5]
    assert f"per-device batch: {per_device}, gradient accumulation: 1" in plan
    assert "170,420 records = 170,300 for training + 120 held out" in plan
    assert "optimizer steps: 10,644 per epoch, 31,932 in total (3 epochs)" in plan  # ceil(170300 / 16) x 3
    assert "warmup 100 steps" in plan and "evaluation: every 80 steps, 400 in all" in plan
    # LLaMA-2-7B, r=32 on q, k, v (4096 -> 4096), up (4096 -> 11008), down (11008 -> 4096), 32 layers:
    lora = 32 * 32 * (3 * (4096 + 4096) + 2 * (4096 + 11008))
    magnitude = 32 * (3 * 4096 + 11008 + 4096)
    assert "6,738,415,616 parameters, stored as float16" in plan
    assert f"(LoRA A and B {lora:,}; magnitude {magnitude:,})" in plan
    assert f"base weights            {6_738_415_616 * 2 / 1024**3:6.1f} GiB" in plan  # half precision on a GPU
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, not even the output folder


@pytest.mark.slow
def test_dry_run_refuses_a_world_size_that_does_not_divide_the_global_batch(tmp_path, paper_sized_dataset):
    proc = _dry_run(tmp_path, paper_sized_dataset, 3)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("dora sft: error: global_batch_size 16 cannot be split over 3 data-parallel")
    assert "Traceback" not in proc.stderr


def _recipe_dry_run(model, dataset, output) -> list[str]:
    """``dora sft --dry_run`` of the llama_7b_dora recipe on ``model`` and ``dataset``, 8 records held out."""
    args = ["sft", "--config", "llama_7b_dora", "--model_name_or_path", str(model), "--dry_run"]
    return args + ["--dataset_name", str(dataset), "--output_dir", str(output), "--val_set_size", "8"]


def test_dry_run_in_process_checks_the_run_and_loads_no_weights(capsys, tmp_path, boolq64):
    """The model folder holds a config.json only: a plan that tried to load weights or a tokenizer would fail."""
    args = _recipe_dry_run(str(LLAMA2_7B_CONFIG), boolq64, tmp_path / "run")
    assert dora_main([*args, "--max_per_device_train_batch_size", "4"]) == 0
    plan = capsys.readouterr().out
    assert "per-device batch: 4, gradient accumulation: 4" in plan
    assert "optimizer steps: 4 per epoch, 12 in total" in plan  # 56 records for training, 16 per step
    assert not (tmp_path / "run").exists()
    assert dora_main([*args, "--lora_target_modules", "q_projj"]) == 2  # the checks of a real run, before any plan
    assert "Did you mean 'q_proj'" in capsys.readouterr().err


def test_dry_run_of_the_qkv_recipe_counts_no_factor_of_the_magnitude_only_modules(capsys, tmp_path, boolq64):
    args = ["sft", "--config=llama_7b_dora_qkv", "--model_name_or_path", str(LLAMA2_7B_CONFIG), "--dry_run"]
    args += ["--dataset_name", str(boolq64), "--output_dir", str(tmp_path / "run"), "--val_set_size", "8"]
    assert dora_main(args) == 0
    plan = capsys.readouterr().out
    print(plan)
    # r=32 on q, k, v (4096 -> 4096) only; magnitudes of q, k, v, o (4096), gate, up (11008), down (4096); 32 layers
    lora = 32 * 32 * 3 * (4096 + 4096)
    magnitude = 32 * (5 * 4096 + 2 * 11008)
    assert f"(LoRA A and B {lora:,}; magnitude {magnitude:,})" in plan and "effective batch: 16" in plan
    assert "learning rate: 2.0e-04" in plan and not (tmp_path / "run").exists()


@pytest.mark.parametrize(("preset", "dropout"), [("dora", 0.05), ("dora", 0.0), ("lora", 0.05), ("lora", 0.0)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_activation_estimate_is_within_a_quarter_of_what_autograd_keeps(preset, dropout, dtype):
    """Reference: the bytes of every tensor autograd saves for backward, counted once per storage."""
    base = make_tiny_llama(
        0, dtype, hidden_size=256, intermediate_size=688, vocab_size=1000, max_position_embeddings=2048
    )
    model = get_peft_model(base, adapter_config(preset, lora_dropout=dropout)).train()
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    ids = torch.randint(0, 1000, (2, 128))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(input_ids=ids, labels=ids)
    adapted = [
        Adapted(m.in_features, m.out_features, m.r["default"], preset == "dora", dropout > 0)
        for m in model.modules()
        if hasattr(m, "lora_A")
    ]
    shape, width = model_shape(base.config), 2 if dtype == torch.bfloat16 else 4
    estimate = ids.numel() * (shape.layers * layer_bytes(shape, adapted, width) + 4 * shape.hidden + 4 * shape.vocab)
    print(f"{preset} dropout {dropout} {dtype}: estimate / saved = {estimate / sum(saved.values()):.3f}")
    assert estimate == pytest.approx(sum(saved.values()), rel=0.25)


def test_dry_run_with_an_uncached_hub_model_offline_says_so(capsys, tmp_path, boolq64, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = _recipe_dry_run("nobody/llama-7b-hf", boolq64, tmp_path / "run")
    assert dora_main(args) == 2
    assert "not in the local Hugging Face cache and HF_HUB_OFFLINE=1" in capsys.readouterr().err


def test_dry_run_of_a_short_run_names_its_real_eval_and_save_steps_and_warns_about_warmup(capsys, tmp_path, boolq64):
    """The paper's recipe (warmup 100, eval and save every 80 steps) cut to 15 steps, as a user tries it first."""
    args = _recipe_dry_run(str(LLAMA2_7B_CONFIG), boolq64, tmp_path / "run")
    assert dora_main([*args, "--max_steps", "15"]) == 0
    plan = capsys.readouterr().out
    assert "evaluation: at step 15 only, the end of the run; every 80 steps would first fall after it" in plan
    assert "checkpoints: at step 15 only, the end of the run; every 80 steps would first fall after it" in plan
    assert "warning: 100 warmup steps exceed the 15 steps of the run" in plan
    assert dora_main([*args, "--max_steps", "15", "--warmup_steps", "5", "--eval_steps", "4"]) == 0
    plan = capsys.readouterr().out
    assert "evaluation: every 4 steps, 4 in all (steps 4, 8, 12, 15; the last at the end of the run)" in plan
    assert "warning" not in plan


@pytest.mark.parametrize(
    ("every", "total", "points"),
    [(80, 15, [15]), (5, 15, [5, 10, 15]), (4, 15, [4, 8, 12, 15]), (15, 15, [15]), (1, 3, [1, 2, 3])],
)
def test_step_points_are_the_multiples_and_the_last_step_as_transformers_saves(every, total, points):
    """transformers.DefaultFlowCallback: a multiple of save_steps / eval_steps, and the last step of the run."""
    assert step_points(every, total) == points


def test_points_line_of_a_long_run_elides_the_middle():
    line = _points_line("checkpoints", "steps", 7, 100, per_epoch=50)
    assert line == "checkpoints: every 7 steps, 15 in all (steps 7, 14, ..., 98, 100; the last at the end of the run)"
    assert _points_line("evaluation", "steps", 0.25, 16, per_epoch=8) == (
        "evaluation: every 4 steps, 4 in all (steps 4, 8, 12, 16)"  # a fraction of the run, as transformers reads it
    )
