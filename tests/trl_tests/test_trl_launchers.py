"""The documented multi-process commands, run as users run them: ``accelerate launch`` with TRL's own FSDP2 config
(``dora sft`` and ``trl sft --use_peft --use_dora``) on 2 CPU processes (gloo), against a 1-process run.

accelerate 1.16 enables FSDP only on accelerator devices; ``tests/cpu_fsdp`` (first on ``PYTHONPATH``) changes that
one decision, so accelerate's FSDP2 wrapping, gradient reduce-scatter, gathered checkpoints and resuming run here
as on GPUs. TRL's ``fsdp2.yaml`` is used unchanged: its ``mixed_precision: bf16`` is overridden by the recipe's
precision (fp32 on a CPU), which the ``setup:`` line shows.

Tolerance, derived: the same 1-process run with another batch split (8 x 1 instead of 2 x 4) sums the same
examples in another order; its mean absolute distance to the 2 x 4 run, at the same step, is the fp32
reduction-order noise after that many Adam steps. FSDP and ZeRO change the order twice (2 x 2 per process, then
the reduction across processes), so their mean distance to the 1-process run may be 4 times that noise. The
largest single difference is no noise measure: Adam divides each update by the root of its squared gradients,
so an element whose gradient is near zero turns rounding noise into a visible step (measured: one element of
2,048 above 1e-6). It is bounded by 1e-4, a fiftieth of one learning-rate step (5e-3). A real error (a lost
shard, a wrong average, a skipped or repeated update) moves the adapter by about a whole step.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, offline_env
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

CPU_FSDP = REPO / "tests" / "cpu_fsdp"
TRL_CONFIGS = Path(__import__("trl").__file__).parent / "accelerate_configs"
RUN = [
    "--config", "llama_7b_dora",
    "--global_batch_size", "8",
    "--val_set_size", "4",  # 60 of the 64 records train: 8 steps per epoch
    "--eval_strategy", "no",
    "--load_best_model_at_end", "false",
    "--num_train_epochs", "1",
    "--learning_rate", "5e-3",
    "--lr_scheduler_type", "constant_with_warmup",  # step 4 of an 8-step run is step 4 of a 4-step run
    "--warmup_steps", "2",
    "--logging_steps", "1",
    "--save_steps", "4",
    "--lora_dropout", "0",  # nothing random may differ between the runs
    "--dataloader_pin_memory", "false",
    "--report_to", "none",
]  # fmt: skip
FP32_SETUP = "stored: base float32, lora_A float32, lora_B float32, magnitude float32; computed in: the stored dtypes"


def _port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _accelerate(config: str, processes: int) -> list[str]:
    """``accelerate launch --config_file <TRL's config> --num_processes N`` (the module form where no script)."""
    script = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    launcher = [script, "launch"] if script else [sys.executable, "-m", "accelerate.commands.launch"]
    return [*launcher, "--config_file", str(TRL_CONFIGS / config), "--num_processes", str(processes),
            "--main_process_port", _port()]  # fmt: skip


def _env() -> dict[str, str]:
    env = offline_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CPU_FSDP), str(REPO), env.get("PYTHONPATH")]))
    return env


def _run(command: list[str], **extra_env: str) -> str:
    proc = subprocess.run(command, capture_output=True, text=True, env={**_env(), **extra_env}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def dora_sft(launcher: list[str], model: Path, data: Path, out: Path, *args: str) -> str:
    return _run([*launcher, "-m", "dora_plugins", "sft", *RUN, "--model_name_or_path", str(model),
                 "--dataset_name", str(data), "--output_dir", str(out), *args])  # fmt: skip


ONE = [sys.executable]  # `python -m dora_plugins sft`: the `dora sft` command
FSDP2 = _accelerate("fsdp2.yaml", 2)


def adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


def max_abs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    return max((a[k] - b[k]).abs().max().item() for k in a)


def mean_abs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return torch.cat([(a[k] - b[k]).flatten() for k in b]).abs().mean().item()


def state(checkpoint: Path) -> tuple[int, int, int]:
    """(global step, total steps, per-device batch) of a checkpoint's trainer state."""
    saved = json.loads((checkpoint / "trainer_state.json").read_text())
    return saved["global_step"], saved["max_steps"], saved["train_batch_size"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir, boolq64):
    """The 1-process run (2 x 4), its reference with another split (8 x 1), and the FSDP2 run; their logs."""
    root = tmp_path_factory.mktemp("launchers")
    logs = {
        "one": dora_sft(ONE, tiny_model_dir, boolq64, root / "one", "--max_per_device_train_batch_size", "2"),
        "split": dora_sft(ONE, tiny_model_dir, boolq64, root / "split", "--max_per_device_train_batch_size", "8"),
        "fsdp": dora_sft(FSDP2, tiny_model_dir, boolq64, root / "fsdp", "--max_per_device_train_batch_size", "2"),
    }
    return root, logs


@pytest.fixture(scope="module")
def noise(runs) -> dict[str, float]:
    """Mean absolute reduction-order noise of the 1-process adapter, per checkpoint folder (see the docstring)."""
    root, _ = runs
    measured = {folder: mean_abs(adapter(root / "split" / folder), adapter(root / "one" / folder))
                for folder in ("checkpoint-4", ".")}  # fmt: skip
    print(f"reduction-order noise (1 process, 8 x 1 vs 2 x 4), mean abs: {measured}")
    assert all(0 < value < 1e-6 for value in measured.values())  # fp32 noise; 0 would mean the order never changed
    return measured


def assert_same_adapter(got: Path, expected: Path, noise: float, what: str) -> None:
    """``got`` is ``expected`` up to 4 x the reduction-order ``noise`` (mean abs), no element off by 1e-4."""
    a, b = adapter(got), adapter(expected)
    mean, largest = mean_abs(a, b), max_abs(a, b)
    print(f"{what}: mean abs {mean:.2e} (tolerance {4 * noise:.2e}), max abs {largest:.2e} (bound 1e-4)")
    assert mean <= 4 * noise and largest < 1e-4, what


def test_accelerate_fsdp2_trains_the_adapter_of_one_process_in_fp32(runs, noise):
    root, logs = runs
    assert "effective batch: 8 (= 2 per device x 4 accumulation x 1 process)" in logs["one"]
    assert f"setup: single x 1 process; mixed precision no; {FP32_SETUP}" in logs["one"]
    assert "effective batch: 8 (= 2 per device x 2 accumulation x 2 processes)" in logs["fsdp"]
    assert f"setup: fsdp2 x 2 processes; mixed precision no; {FP32_SETUP}" in logs["fsdp"]
    assert "The launcher's mixed precision 'bf16'" in logs["fsdp"]  # TRL's fsdp2.yaml asks for bf16
    for folder in ("checkpoint-4", "."):
        assert_same_adapter(root / "fsdp" / folder, root / "one" / folder, noise[folder], f"FSDP2 x 2, {folder}")


def test_fsdp2_checkpoints_are_whole_peft_adapters_that_stock_peft_loads(runs, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from dora_plugins import route_peft
    from dora_plugins.peft_layer import DoraLinear

    root, _ = runs
    checkpoint = root / "fsdp" / "checkpoint-4"
    config = json.loads((checkpoint / "adapter_config.json").read_text())
    assert (config["peft_type"], config["use_dora"]) == ("LORA", True)
    ids = torch.arange(3, 40)[None]
    outputs = {}
    for routed in (False, True):
        route_peft(routed)
        try:
            base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
            model = PeftModel.from_pretrained(base, checkpoint).eval()
        finally:
            route_peft(False)
        assert any(isinstance(m, DoraLinear) for m in model.modules()) == routed
        with torch.no_grad():
            outputs[routed] = model(input_ids=ids).logits
    assert torch.isfinite(outputs[False]).all()
    assert (outputs[True] - outputs[False]).abs().max().item() < 1e-4


@pytest.mark.parametrize("direction", ["one process -> FSDP2 x 2", "FSDP2 x 2 -> one process"])
def test_resuming_across_launchers_keeps_steps_global_batch_and_adapter(
    runs, noise, tmp_path, tiny_model_dir, boolq64, direction
):
    root, _ = runs
    source, launcher, split = ("one", FSDP2, "2 x 2 x 2") if direction.startswith("one") else ("fsdp", ONE, "2 x 4")
    out = tmp_path / "resumed"
    out.mkdir()
    shutil.copytree(root / source / "checkpoint-4", out / "checkpoint-4")
    log = dora_sft(launcher, tiny_model_dir, boolq64, out, "--max_per_device_train_batch_size", "2",
                   "--resume_from_checkpoint", "true")  # fmt: skip
    per_device, accumulation, *processes = split.split(" x ")
    assert f"effective batch: 8 (= {per_device} per device x {accumulation} accumulation" in log
    assert state(out / "checkpoint-8") == (8, 8, 2)
    assert_same_adapter(out, root / "one", noise["."], f"resumed {direction}, vs the uninterrupted run")


def test_dora_merge_of_the_fsdp2_adapter_gives_the_adapters_outputs(runs, tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from dora_plugins.cli import main

    root, _ = runs
    merged = tmp_path / "merged"
    assert main(["merge", "--base", str(tiny_model_dir), "--adapter", str(root / "fsdp"), "--output", str(merged)]) == 0
    ids = torch.arange(3, 40)[None]
    with torch.no_grad():
        expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), root / "fsdp")
        got = AutoModelForCausalLM.from_pretrained(merged).eval()(input_ids=ids).logits
        assert (got - expected.eval()(input_ids=ids).logits).abs().max().item() < 1e-4


def test_trl_sft_use_dora_under_trl_fsdp2_config_trains_our_layer_and_saves_a_peft_adapter(
    tmp_path, tiny_model_dir, boolq_records
):
    from dora_plugins.prompts import train_text

    data = tmp_path / "data"
    data.mkdir()
    rows = [{"text": train_text(r["instruction"], r["output"])} for r in boolq_records[:32]]
    (data / "train.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    script = shutil.which("trl", path=os.path.dirname(sys.executable))
    trl = [script] if script else [sys.executable, "-c", "import sys; from trl.cli import main; sys.exit(main())"]
    log = _run([
        *trl, "sft", "--accelerate_config", "fsdp2", "--num_processes", "2", "--main_process_port", _port(),
        "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(data), "--output_dir", str(tmp_path / "out"),
        "--use_peft", "--use_dora", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0",
        "--lora_target_modules", "q_proj", "v_proj", "--max_steps", "2", "--save_steps", "2",
        "--per_device_train_batch_size", "2", "--max_length", "128", "--use_cpu", "true", "--bf16", "false",
        "--report_to", "none",
    ], DORA_TEST_ROUTING_PROBE="1")  # fmt: skip
    assert "runs dora-plugins' DoRA layer" in log
    assert log.count("ROUTED-IN-TRAINING-PROCESS") == 2  # tests/cpu_fsdp reports each trainer process's routing
    checkpoint = tmp_path / "out" / "checkpoint-2"
    assert (checkpoint / "pytorch_model_fsdp.bin").is_file()  # FSDP's own checkpoint: it did run sharded
    saved = adapter(tmp_path / "out")
    assert {v.dtype for v in saved.values()} == {torch.float32}
    assert saved["base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"].shape == (32,)
    assert json.loads((tmp_path / "out" / "adapter_config.json").read_text())["use_dora"] is True


@pytest.mark.parametrize("config", ["zero2.yaml", "zero3.yaml"])
def test_deepspeed_zero_trains_the_adapter_of_one_process(runs, noise, tmp_path, tiny_model_dir, boolq64, config):
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install deepspeed)")
    root, _ = runs
    out = tmp_path / "zero"
    log = dora_sft(_accelerate(config, 2), tiny_model_dir, boolq64, out, "--max_per_device_train_batch_size", "2",
                   "--max_steps", "4")  # fmt: skip
    stage = config.removesuffix(".yaml").removeprefix("zero")
    assert f"setup: deepspeed zero{stage} x 2 processes; mixed precision no; {FP32_SETUP}" in log
    one = root / "one" / "checkpoint-4"
    assert_same_adapter(out, one, noise["checkpoint-4"], f"DeepSpeed ZeRO-{stage} x 2, 4 steps")
