"""Optimizer state crosses launchers by parameter name (``trl_integration.checkpoints``).

One process and DDP save ``Optimizer.state_dict()`` (``optimizer.pt``, keyed by position); accelerate's FSDP saves
``get_optimizer_state_dict`` (``optimizer.bin``, keyed by name). Here the FSDP file is written by torch's own
``get_optimizer_state_dict`` on an unsharded model (the same keys a FULL_STATE_DICT FSDP2 checkpoint has); the
FSDP side of the translation runs in ``test_trl_launchers`` under ``accelerate launch``.
"""

from __future__ import annotations

import torch
from helpers import make_tiny_llama
from peft import get_peft_model
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

from dora_plugins import DoraConfig
from trl_integration.checkpoints import (
    OPTIMIZER_BIN,
    OPTIMIZER_PT,
    foreign_optimizer,
    is_fsdp_adapter_checkpoint,
    load_foreign_optimizer,
)


def _trained():
    torch.manual_seed(0)
    model = get_peft_model(make_tiny_llama(), DoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": params[::2]}, {"params": params[1::2], "weight_decay": 0.0}], lr=1e-2)
    for _ in range(2):
        model(input_ids=torch.arange(3, 19)[None], labels=torch.arange(3, 19)[None]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def test_an_fsdp_optimizer_file_loads_into_a_one_process_optimizer_by_parameter_name(tmp_path):
    model, optimizer = _trained()
    by_name = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True))
    torch.save(by_name, tmp_path / OPTIMIZER_BIN)
    assert foreign_optimizer(str(tmp_path), fsdp=False) == str(tmp_path / OPTIMIZER_BIN)
    assert foreign_optimizer(str(tmp_path), fsdp=True) is None  # its own format: transformers loads it

    fresh_model, fresh = _trained()
    for state in fresh.state.values():  # make every moment differ from the saved ones
        state["exp_avg"].zero_()
    load_foreign_optimizer(str(tmp_path / OPTIMIZER_BIN), fresh_model, fresh, fsdp=False)
    expected, got = optimizer.state_dict(), fresh.state_dict()
    assert expected["param_groups"] == got["param_groups"]
    assert expected["state"].keys() == got["state"].keys()
    for index, state in expected["state"].items():
        for key, value in state.items():
            assert torch.equal(value, got["state"][index][key]), (index, key)


def test_own_format_and_fsdp_adapter_checkpoints_are_told_apart(tmp_path):
    torch.save({}, tmp_path / OPTIMIZER_PT)
    assert foreign_optimizer(str(tmp_path), fsdp=False) is None
    assert foreign_optimizer(str(tmp_path), fsdp=True) == str(tmp_path / OPTIMIZER_PT)
    assert not is_fsdp_adapter_checkpoint(str(tmp_path))
    for name in ("pytorch_model_fsdp.bin", "adapter_model.safetensors"):
        (tmp_path / name).write_bytes(b"")
    assert is_fsdp_adapter_checkpoint(str(tmp_path))
