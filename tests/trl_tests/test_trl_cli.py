"""``dora sft`` for real on CPU: a recipe on a tiny LLaMA and 64 BoolQ records; resume; stock PEFT; DDP; bad input."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import offline_env
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from dora_plugins.cli import main as dora_main
from trl_integration.cli import recipe_names

RECIPE = "llama_7b_dora"  # the paper's LLaMA-7B DoRA row, shrunk below to a tiny model and a few steps
TINY_RUN = [
    "--global_batch_size", "8",
    "--learning_rate", "5e-3",
    "--warmup_steps", "0",
    "--val_set_size", "8",
    "--eval_steps", "4",
    "--save_steps", "4",
    "--logging_steps", "2",
    "--gradient_checkpointing", "false",
    "--dataloader_pin_memory", "false",
]  # fmt: skip


DORA = shutil.which("dora", path=os.path.dirname(sys.executable)) or shutil.which("dora")  # the console script


def _dora(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([DORA, "sft", *args], capture_output=True, text=True, env=env or offline_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _history(checkpoint) -> list[dict]:
    return json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]


STOCK_PEFT_LOAD = textwrap.dedent(
    """
    import sys, torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    base, adapter, merged = sys.argv[1:4]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
    assert "dora_plugins.peft_layer" not in sys.modules and "trl_integration" not in sys.modules  # stock layers
    assert any("lora_magnitude_vector" in name for name, _ in model.named_parameters())
    ids = torch.arange(3, 40)[None]
    with torch.no_grad():
        logits = model(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(base)(ids).logits
        folded = AutoModelForCausalLM.from_pretrained(merged)(ids).logits if merged != "-" else logits
    print(json.dumps({"adapter_vs_base": (logits - plain).abs().max().item(),
                      "adapter_vs_merged": (logits - folded).abs().max().item()}))
    """
).replace("import sys, torch", "import json, sys, torch")


def _load_with_stock_peft(base, adapter, merged="-") -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", STOCK_PEFT_LOAD, str(base), str(adapter), str(merged)],
        capture_output=True,
        text=True,
        env=offline_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_dora_sft_recipe_trains_resumes_and_stock_peft_loads_it(tmp_path, tiny_model_dir, boolq64):
    out, merged = tmp_path / "run", tmp_path / "merged"
    common = ["--config", RECIPE, "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(boolq64)]
    _dora(*common, "--output_dir", str(out), "--max_steps", "8", *TINY_RUN)

    history = _history(out / "checkpoint-8")
    losses = [h["loss"] for h in history if "loss" in h]
    print("dora sft losses (steps 2, 4, 6, 8):", [round(x, 4) for x in losses])
    assert len(losses) == 4 and losses[-1] < 0.85 * losses[0]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    assert len(evals) == 2 and evals[1] < evals[0]
    assert {"dora/q_proj/delta_m", "dora/down_proj/delta_d"} <= {k for h in history for k in h}
    for folder in (out, out / "checkpoint-4", out / "checkpoint-8"):
        assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in folder.iterdir()}
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["peft_type"], config["use_dora"], config["r"], config["lora_alpha"]) == ("LORA", True, 32, 64)
    best = json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())["best_model_checkpoint"]
    assert best == str(out / "checkpoint-8")  # a published folder, never the staging one

    resumed = _dora(
        *common,
        "--output_dir", str(out),
        "--max_steps", "12",
        "--resume_from_checkpoint", "true",
        "--merged_output_dir", str(merged),
        *TINY_RUN,
        env={**offline_env(), "TRANSFORMERS_VERBOSITY": "info"},
    )  # fmt: skip
    assert "Resuming training from checkpoint with epoch 1 and global step 8" in resumed.stderr + resumed.stdout
    resumed_history = _history(out / "checkpoint-12")
    assert resumed_history[: len(history)] == history
    assert [h["step"] for h in resumed_history if "loss" in h] == [2, 4, 6, 8, 10, 12]
    curve = [(h["step"], round(h.get("loss", h.get("eval_loss")), 4)) for h in resumed_history if "loss" in h]
    evals = [(h["step"], round(h["eval_loss"], 4)) for h in resumed_history if "eval_loss" in h]
    print("dora sft loss curve after resuming (step, loss):", curve, "eval (step, loss):", evals)

    diffs = _load_with_stock_peft(tiny_model_dir, out, merged)
    assert diffs["adapter_vs_base"] > 1e-3  # the adapter changes the model
    assert diffs["adapter_vs_merged"] < 1e-4  # and the merged model is the same function


def test_dora_sft_runs_under_accelerate_launch_ddp_on_cpu(tmp_path, tiny_model_dir, boolq64):
    """Two processes, DDP on gloo. 'accelerate launch --cpu --num_processes 2' would start ONE process (accelerate
    1.15 runs several CPU processes only through mpirun); '--multi_gpu' starts two, and 'dora sft' sets use_cpu on a
    machine without an accelerator, so transformers sets up DDP on gloo."""
    out = tmp_path / "ddp"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--main_process_port", port,
        "-m", "dora_plugins", "sft",
        "--config", RECIPE, "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(boolq64),
        "--output_dir", str(out), "--max_steps", "4", *TINY_RUN,
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, env=offline_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and state["train_batch_size"] == 4  # global batch 8 = 4 per process x 2
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in (out / "checkpoint-4").iterdir()}  # 2 ranks
    assert _load_with_stock_peft(tiny_model_dir, out)["adapter_vs_base"] > 1e-3


def _fails(capsys, *args: str) -> str:
    """``dora sft ARGS`` fails with status 2; its stderr (one ``dora sft: error:`` line, no traceback)."""
    assert dora_main(["sft", *args]) == 2
    err = capsys.readouterr().err
    assert "dora sft: error: " in err and "Traceback" not in err
    return err


@pytest.fixture
def quick_args(tiny_model_dir, boolq64, tmp_path) -> list[str]:
    return [
        "--config", RECIPE, "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(boolq64),
        "--output_dir", str(tmp_path / "never"), "--max_steps", "1", *TINY_RUN,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--preset", "dorra"], "Unknown preset 'dorra'. Did you mean 'dora'?"),
        (["--lora_target_modules", "q_projj"], "['q_projj'] not found in LlamaForCausalLM. Did you mean 'q_proj'"),
        (["--dataset_name", "/nonexistent/boolq.json"], "Dataset file /nonexistent/boolq.json does not exist"),
        (["--val_set_size", "0"], "eval_strategy='steps' needs held-out records: set --val_set_size"),
    ],
    ids=["unknown-preset", "unknown-target-module", "missing-dataset", "eval-without-held-out-records"],
)
def test_bad_input_fails_before_training_with_a_clear_message(capsys, tmp_path, quick_args, extra, message):
    assert message in _fails(capsys, *quick_args, *extra)
    assert not list(tmp_path.glob("never/checkpoint-*"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[{"instruction": "q", ', "broken.json is not valid JSON"),
        ('[{"instruction": "q", "output": "a"}, {"instruction": "q"}]', "broken.json, record 1 lacks"),
    ],
    ids=["not-json", "record-without-output"],
)
def test_bad_dataset_file_is_named(capsys, tmp_path, quick_args, content, message):
    path = tmp_path / "broken.json"
    path.write_text(content)
    assert message in _fails(capsys, *quick_args, "--dataset_name", str(path))


def test_misspelt_recipe_key_is_named_with_the_fix(capsys, tmp_path, quick_args):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("learning_rat: 1.0e-4\nlora_r: 8\n")
    err = _fails(capsys, *quick_args[2:], "--config", str(recipe))
    assert "Unknown key(s) ['learning_rat'] in config" in err and "Did you mean 'learning_rate'" in err


def test_unknown_recipe_name_lists_the_recipes(capsys, quick_args):
    err = _fails(capsys, *quick_args[2:], "--config", "llama_7b_dorra")
    assert "Did you mean 'llama_7b_dora'?" in err and ", ".join(recipe_names()) in err


def test_model_without_the_target_modules_fails_before_training(capsys, tmp_path, quick_args, tiny_model_dir):
    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=400, n_positions=512)).save_pretrained(gpt2)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(gpt2)
    err = _fails(capsys, *quick_args, "--model_name_or_path", str(gpt2))
    assert "not found in GPT2LMHeadModel" in err and "Its linear layers are: c_attn, c_fc, c_proj" in err


def test_recipes_carry_the_paper_hyper_parameters():
    import yaml

    from trl_integration.cli import RECIPES_DIR

    lr = {"llama_7b": (1e-4, 2e-4), "llama2_7b": (2e-4, 2e-4), "llama3_8b": (1e-4, 1e-4)}  # table 8: DoRA, DoRA-dagger
    assert len(recipe_names()) == 10  # these nine and llama_7b_dora_qkv
    for model, (dora_lr, half_lr) in lr.items():
        for preset, rank, rate in (("dora", 32, dora_lr), ("dora_half", 16, half_lr), ("lora", 32, 3e-4)):
            recipe = yaml.safe_load((RECIPES_DIR / f"{model}_{preset}.yaml").read_text())
            assert (recipe["preset"], recipe["lora_r"], recipe["lora_alpha"], recipe["learning_rate"]) == (
                preset,
                rank,
                2 * rank,
                rate,
            )
            assert recipe["global_batch_size"] == 16 and "per_device_train_batch_size" not in recipe
            assert (recipe["num_train_epochs"], recipe["warmup_steps"], recipe["val_set_size"]) == (3, 100, 120)
            assert (recipe["max_length"], recipe["lr_scheduler_type"], recipe["optim"]) == (
                256,
                "linear",
                "adamw_torch",
            )
            assert recipe["lora_target_modules"] == ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]


def test_qkv_recipe_is_the_papers_llama_7b_dora_qkv_script():
    """NVlabs/DoRA commonsense_reasoning/llama_7B_Dora_qkv.sh, run as 'sh llama_7B_Dora_qkv.sh 32 64 ...'."""
    import yaml

    from trl_integration.cli import RECIPES_DIR

    recipe = yaml.safe_load((RECIPES_DIR / "llama_7b_dora_qkv.yaml").read_text())
    assert (recipe["preset"], recipe["lora_r"], recipe["lora_alpha"], recipe["learning_rate"]) == (
        "dora_qkv",
        32,
        64,
        2e-4,
    )
    assert recipe["lora_target_modules"] == ["q_proj", "k_proj", "v_proj"]
    assert recipe["magnitude_only_modules"] == ["o_proj", "gate_proj", "up_proj", "down_proj"]
    assert recipe["global_batch_size"] == 16 and "per_device_train_batch_size" not in recipe
    assert (recipe["num_train_epochs"], recipe["warmup_steps"], recipe["val_set_size"], recipe["max_length"]) == (
        3,
        100,
        120,
        256,
    )


def test_qkv_recipe_trains_the_magnitude_only_of_o_gate_up_down(tmp_path, tiny_model_dir, boolq64):
    from safetensors.torch import load_file

    out = tmp_path / "qkv"
    args = ["--config", "llama_7b_dora_qkv", "--model_name_or_path", str(tiny_model_dir), "--dataset_name"]
    _dora(*args, str(boolq64), "--output_dir", str(out), "--max_steps", "2", *TINY_RUN)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["magnitude_only_modules"] == ["o_proj", "gate_proj", "up_proj", "down_proj"]
    tensors = load_file(out / "adapter_model.safetensors")
    factors = {k: t for k, t in tensors.items() if "lora_A" in k or "lora_B" in k}
    assert not any(t.any() for k, t in factors.items() if k.split(".")[-3] in config["magnitude_only_modules"])
    assert all(t.any() for k, t in factors.items() if k.split(".")[-3] in ("q_proj", "k_proj", "v_proj"))
    assert _load_with_stock_peft(tiny_model_dir, out)["adapter_vs_base"] > 1e-4


def test_recipes_ship_in_the_wheel(tmp_path):
    import zipfile

    project = tmp_path / "project"  # a copy: building leaves nothing in the working tree
    project.mkdir()
    for name in ("pyproject.toml", "README.md", "dora_plugins", "lm_eval_tasks", "trl_integration"):
        source = Path(__file__).resolve().parents[2] / name
        if source.is_dir():
            shutil.copytree(source, project / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, project / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(project), "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path],
        check=True,
        capture_output=True,
        env={**offline_env(), "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        timeout=300,
    )
    (wheel,) = tmp_path.glob("dora_plugins-*.whl")
    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("trl_integration/recipes/")}
    assert shipped == {f"trl_integration/recipes/{name}.yaml" for name in recipe_names()}


def test_help_all_starts_with_our_options_the_recipes_and_an_example(capsys):
    assert dora_main(["sft", "--help-all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = "\n".join(lines[:30])
    print(head)
    assert lines[0].startswith("usage: dora sft --config RECIPE|FILE.yaml")
    assert all(name in head for name in recipe_names()) and "Example" in head
    assert "--config RECIPE|FILE.yaml" in head and "--preset" in head and "--global_batch_size" in head
    ours = lines.index("dora sft options (also recipe YAML keys):")
    trl = lines.index("TRL's options (as in 'trl sft'; also YAML keys):")
    assert ours < 20 < trl
    flag = {name: next(i for i, line in enumerate(lines) if line.lstrip().startswith(name)) for name in (
        "--dry_run", "--max_per_device_train_batch_size", "--precision", "--learning_rate", "--lora_r",
    )}  # fmt: skip
    assert max(flag["--dry_run"], flag["--precision"], flag["--max_per_device_train_batch_size"]) < trl
    assert trl < min(flag["--learning_rate"], flag["--lora_r"])


def test_hub_dataset_offline_fails_at_once_in_one_line_before_the_model_loads(tmp_path):
    """The model folder holds a config.json only: loading its tokenizer or weights would fail differently."""
    model = tmp_path / "config-only"
    model.mkdir()
    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(model)
    args = ["--config", RECIPE, "--model_name_or_path", str(model), "--dataset_name", "nobody/commonsense_170k"]
    proc = subprocess.run(
        [DORA, "sft", *args, "--output_dir", str(tmp_path / "run")], capture_output=True, text=True, env=offline_env(),
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]  # above it: only the log line that bf16 is off on a CPU
    assert error.startswith("dora sft: error: Could not load dataset 'nobody/commonsense_170k'")
    assert "local cache" in error and proc.stderr.count("dora sft: error:") == 1


@pytest.mark.slow
def test_overwrite_trains_beside_the_users_files_and_starts_an_earlier_run_over(tmp_path, tiny_model_dir, boolq64):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    common = ["--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(boolq64), "--output_dir", str(out),
              "--per_device_train_batch_size", "4", "--gradient_checkpointing", "false",
              "--dataloader_pin_memory", "false", "--report_to", "none"]  # fmt: skip
    refused = subprocess.run([DORA, "sft", *common, "--max_steps", "1"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "holds files that 'dora sft' did not write (notes.txt)" in refused.stderr

    _dora(*common, "--max_steps", "2", "--save_steps", "2", "--overwrite")
    marker = json.loads((out / ".dora-run.json").read_text())
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(marker["files"])
    assert (out / "checkpoint-2" / "trainer_state.json").is_file() and (out / "notes.txt").read_text() == "my notes"
    again = subprocess.run([DORA, "sft", *common, "--max_steps", "1"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "holds an earlier training run" in again.stderr

    _dora(*common, "--max_steps", "1", "--save_steps", "1", "--overwrite")
    names = {p.name for p in out.iterdir()}
    assert "checkpoint-1" in names and "checkpoint-2" not in names  # the earlier run's, deleted
    assert (out / "notes.txt").read_text() == "my notes" and "adapter_model.safetensors" in names
