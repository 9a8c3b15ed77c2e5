"""One recipe, any world size: 1 process and ``torchrun --nproc_per_node 2`` (DDP on gloo) make the same run.

The recipe's global batch (8 here) is split as 2 per device x 4 accumulation in one process and 2 per
device x 2 accumulation x 2 processes under torchrun; the optimizer steps, the learning-rate schedule and
(with dropout off, so that nothing random differs) the losses must agree, and a checkpoint of the
one-process run must resume under two processes with the same global batch and step count.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys

import pytest
from helpers import offline_env

pytestmark = pytest.mark.slow

RUN = [
    "--config", "llama_7b_dora",
    "--global_batch_size", "8",
    "--max_per_device_train_batch_size", "2",
    "--val_set_size", "4",  # 60 of the 64 records train: 8 steps per epoch, the last one on 4 examples
    "--eval_strategy", "no",
    "--load_best_model_at_end", "false",
    "--num_train_epochs", "1",
    "--learning_rate", "5e-3",
    "--warmup_steps", "2",
    "--logging_steps", "1",
    "--save_steps", "4",
    "--lora_dropout", "0",
    "--gradient_checkpointing", "false",
    "--dataloader_pin_memory", "false",
    "--report_to", "none",
]  # fmt: skip


def _sft(processes: int, *args: str) -> str:
    """Run ``dora sft`` in ``processes`` processes (torchrun when more than one); its stdout and stderr."""
    if processes == 1:
        launcher = [sys.executable, "-m", "dora_plugins"]
    else:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = str(sock.getsockname()[1])
        launcher = [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
            "--master_port", port, "-m", "dora_plugins",
        ]  # fmt: skip
    proc = subprocess.run([*launcher, "sft", *args], capture_output=True, text=True, env=offline_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def _steps(output_dir) -> list[tuple[int, float, float]]:
    """(step, learning rate, loss) of every logged optimizer step of the run's last checkpoint."""
    last = max(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    history = json.loads((last / "trainer_state.json").read_text())["log_history"]
    return [(h["step"], h["learning_rate"], h["loss"]) for h in history if "loss" in h]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tiny_model_dir, boolq64):
    out = tmp_path_factory.mktemp("world") / "one"
    log = _sft(1, *RUN, "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(boolq64),
               "--output_dir", str(out))  # fmt: skip
    assert "effective batch: 8 (= 2 per device x 4 accumulation x 1 process)" in log
    return out


def test_one_and_two_processes_make_the_same_steps_schedule_and_losses(one_process, tmp_path, tiny_model_dir, boolq64):
    out = tmp_path / "two"
    log = _sft(2, *RUN, "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(boolq64),
               "--output_dir", str(out))  # fmt: skip
    assert "effective batch: 8 (= 2 per device x 2 accumulation x 2 processes)" in log
    assert "find_unused_parameters=True" not in log  # DDP's per-step search for unused parameters is off
    one, two = _steps(one_process), _steps(out)
    print("1 process  (step, lr, loss):", [(s, f"{lr:.2e}", round(loss, 4)) for s, lr, loss in one])
    print("2 processes (step, lr, loss):", [(s, f"{lr:.2e}", round(loss, 4)) for s, lr, loss in two])
    assert [s for s, _, _ in one] == [s for s, _, _ in two] == list(range(1, 9))
    assert [lr for _, lr, _ in one] == pytest.approx([lr for _, lr, _ in two], rel=1e-9)
    assert [loss for _, _, loss in one] == pytest.approx([loss for _, _, loss in two], rel=1e-3)


def test_resuming_under_another_world_size_keeps_the_global_batch_and_the_steps(
    one_process, tmp_path, tiny_model_dir, boolq64
):
    out = tmp_path / "resumed"
    out.mkdir()
    shutil.copytree(one_process / "checkpoint-4", out / "checkpoint-4")
    log = _sft(2, *RUN, "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(boolq64),
               "--output_dir", str(out), "--resume_from_checkpoint", "true")  # fmt: skip
    assert "effective batch: 8 (= 2 per device x 2 accumulation x 2 processes)" in log
    assert "find_unused_parameters=True" not in log  # DDP's per-step search for unused parameters is off
    state = json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())
    assert (state["global_step"], state["max_steps"], state["train_batch_size"]) == (8, 8, 2)
    resumed, uninterrupted = _steps(out), _steps(one_process)
    print("resumed under 2 processes (step, lr, loss):", [(s, f"{lr:.2e}", round(x, 4)) for s, lr, x in resumed])
    assert [s for s, _, _ in resumed] == list(range(1, 9))
    assert [lr for _, lr, _ in resumed] == pytest.approx([lr for _, lr, _ in uninterrupted], rel=1e-9)
    assert [x for _, _, x in resumed[4:]] == pytest.approx([x for _, _, x in uninterrupted[4:]], rel=1e-3)
