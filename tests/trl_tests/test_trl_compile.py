"""``dora sft --torch_compile`` (``SFTConfig(torch_compile=True)``) trains the adapter that eager training does."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from dora_plugins.cli import main as dora_main

RUN = [
    "--config", "llama_7b_dora", "--global_batch_size", "8", "--learning_rate", "5e-3", "--warmup_steps", "0",
    "--max_steps", "3", "--lora_dropout", "0.0", "--val_set_size", "0", "--eval_strategy", "no",
    "--save_strategy", "no", "--report_to", "none", "--gradient_checkpointing", "false",
    "--dataloader_pin_memory", "false", "--seed", "0", "--pad_to_multiple_of", "512",  # one shape: one compile
]  # fmt: skip
# Dynamo traces our layer the same for every backend; inductor's C++ code generation (a minute on 2 cores, the
# backend's own business) is left to tests/test_compile.py, which runs it on one layer.
BACKEND = "aot_eager"


@pytest.mark.slow
def test_compiled_training_gives_the_eager_adapter(tmp_path, tiny_model_dir, boolq64):
    data = ["--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(boolq64)]
    assert dora_main(["sft", *data, *RUN, "--output_dir", str(tmp_path / "eager")]) == 0
    compiled = ["--torch_compile", "true", "--torch_compile_backend", BACKEND]
    assert dora_main(["sft", *data, *RUN, "--output_dir", str(tmp_path / "compiled"), *compiled]) == 0
    eager = load_file(tmp_path / "eager" / "adapter_model.safetensors")
    compiled = load_file(tmp_path / "compiled" / "adapter_model.safetensors")
    assert eager.keys() == compiled.keys() and any("lora_magnitude_vector" in key for key in eager)
    for key, value in eager.items():
        assert ((compiled[key] - value).abs().max() / value.abs().max()).item() < 1e-4, key
    assert not torch.equal(eager[next(k for k in eager if "lora_B" in k)], torch.zeros(1))  # it trained
