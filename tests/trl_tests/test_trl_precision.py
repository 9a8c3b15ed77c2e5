"""Precision: which dtypes base weights, adapters and magnitude have after setup, for each choice and machine.

The GPU's capability is simulated (the test machine may have none); the trainer is built on the CPU, which can
hold bf16 and fp16 tensors, so the dtypes after setup are the real ones.
"""

from __future__ import annotations

import logging

import pytest
import torch
from trl import ModelConfig

from dora_plugins import DoraConfig
from dora_plugins.errors import ConfigError
from trl_integration import DoraSFTConfig, DoraSFTTrainer, sft_datasets
from trl_integration import sft_config as sft_config_module
from trl_integration.precision import mixed_precision
from trl_integration.train import load_model

# (precision, the GPU: its half dtype or None) -> (bf16, fp16, base dtype)
CASES = {
    ("auto", "bfloat16"): (True, False, torch.bfloat16),  # Ampere or newer
    ("auto", "float16"): (False, True, torch.float16),  # V100, T4: fp16 with loss scaling
    ("auto", None): (False, False, torch.float32),  # no CUDA GPU
    ("paper", "bfloat16"): (False, True, torch.float16),  # finetune.py: torch_dtype=float16, fp16=True
    ("paper", "float16"): (False, True, torch.float16),
    ("paper", None): (False, False, torch.float32),
}


@pytest.mark.parametrize(("precision", "gpu"), list(CASES), ids=[f"{p}-{g or 'cpu'}" for p, g in CASES])
def test_precision_choice_gives_half_base_and_fp32_adapters_and_magnitude_after_setup(
    monkeypatch, tmp_path, tiny_model_dir, boolq_tokenizer, boolq_records, precision, gpu
):
    monkeypatch.setattr(sft_config_module, "gpu_half_dtype", lambda: gpu)
    args = DoraSFTConfig(output_dir=str(tmp_path), precision=precision, report_to="none", gradient_checkpointing=False)
    bf16, fp16, base = CASES[precision, gpu]
    assert (args.bf16, args.fp16, args.base_dtype()) == (bf16, fp16, str(base).removeprefix("torch."))
    model = load_model(ModelConfig(model_name_or_path=str(tiny_model_dir)), args.base_dtype())  # as dora sft does
    if fp16:
        args.fp16 = False  # fp16 autocast needs a GPU; the dtypes after setup do not depend on it
    trainer = DoraSFTTrainer(
        model=model,
        args=args,
        train_dataset=sft_datasets(boolq_records[:8], boolq_tokenizer)[0],
        processing_class=boolq_tokenizer,
        peft_config=DoraConfig(),
    )
    dtypes = {}
    for name, param in trainer.model.named_parameters():
        kind = next((k for k in ("lora_A", "lora_B", "lora_magnitude_vector") if k in name), "base")
        dtypes.setdefault(kind, set()).add(param.dtype)
    assert dtypes == {
        "base": {base},
        "lora_A": {torch.float32},
        "lora_B": {torch.float32},
        "lora_magnitude_vector": {torch.float32},
    }


def test_without_a_gpu_bf16_is_turned_off_with_a_log_line(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(sft_config_module, "gpu_half_dtype", lambda: None)
    with caplog.at_level(logging.WARNING):
        args = DoraSFTConfig(output_dir=str(tmp_path))
    assert not args.bf16 and not args.fp16
    assert "No CUDA GPU: bf16 is off" in caplog.text


def test_explicit_mixed_precision_flags_win(monkeypatch, tmp_path):
    monkeypatch.setattr(sft_config_module, "gpu_half_dtype", lambda: "bfloat16")
    args = DoraSFTConfig(output_dir=str(tmp_path), bf16=False)
    assert (args.bf16, args.fp16, args.base_dtype()) == (False, False, "float32")


def test_unknown_precision_is_named_with_the_choices():
    with pytest.raises(ConfigError, match="Unknown precision 'papr'. Did you mean 'paper'?"):
        mixed_precision("papr", "bfloat16")


@pytest.mark.parametrize(("gpu", "expected"), [(None, "no"), ("bfloat16", "bf16"), ("float16", "fp16")])
def test_the_launchers_mixed_precision_gives_way_to_the_runs_precision(monkeypatch, tmp_path, caplog, gpu, expected):
    # accelerate launch --config_file <TRL's configs> exports ACCELERATE_MIXED_PRECISION=bf16; TrainingArguments
    # kept it whenever bf16 and fp16 were off, so an fp32 run autocast (and FSDP computed) in bf16.
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    monkeypatch.setattr(sft_config_module, "gpu_half_dtype", lambda: gpu)
    with caplog.at_level(logging.WARNING):
        args = DoraSFTConfig(output_dir=str(tmp_path), report_to="none")
    assert args.mixed_precision == expected
    assert ("The launcher's mixed precision 'bf16'" in caplog.text) == (expected != "bf16")
