"""Checkpoints that resume under another launcher: one process or DDP <-> FSDP (FULL_STATE_DICT).

transformers writes a checkpoint's optimizer in the launcher's own format and refuses the other one: one process
and DDP save ``optimizer.pt`` (``Optimizer.state_dict()``, keyed by the parameter's position), FSDP saves
``optimizer.bin`` (``get_optimizer_state_dict``, keyed by parameter name) plus ``pytorch_model_fsdp.bin``, and
resuming an FSDP checkpoint without FSDP raises "only supported when using PyTorch FSDP". The adapter itself is an
ordinary PEFT ``adapter_model.safetensors`` in both. Here the optimizer state is translated by parameter name,
so a run started under FSDP resumes in one process (or DDP) and the other way round, with its Adam moments.
DeepSpeed checkpoints (``global_step*/``) resume only under DeepSpeed.
"""

from __future__ import annotations

import os
from typing import Any

import torch

OPTIMIZER_PT = "optimizer.pt"  # transformers.trainer.OPTIMIZER_NAME
OPTIMIZER_BIN = "optimizer.bin"  # accelerate's FSDP FULL_STATE_DICT optimizer
FSDP_MODEL = "pytorch_model_fsdp.bin"
ADAPTER = "adapter_model.safetensors"


def is_fsdp_adapter_checkpoint(checkpoint: str) -> bool:
    """An FSDP (FULL_STATE_DICT) checkpoint of a PEFT model: its adapter is a complete PEFT adapter file."""
    return all(os.path.isfile(os.path.join(checkpoint, name)) for name in (FSDP_MODEL, ADAPTER))


def foreign_optimizer(checkpoint: str, fsdp: bool) -> str | None:
    """The optimizer file of ``checkpoint`` when it was written by the other kind of launcher, else None."""
    own, other = (OPTIMIZER_BIN, OPTIMIZER_PT) if fsdp else (OPTIMIZER_PT, OPTIMIZER_BIN)
    if os.path.isfile(os.path.join(checkpoint, own)) or not os.path.isfile(os.path.join(checkpoint, other)):
        return None
    return os.path.join(checkpoint, other)


def parameter_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The name of each parameter of ``optimizer``, in the order ``Optimizer.state_dict()`` numbers them."""
    names = {id(param): name for name, param in model.named_parameters()}
    return [names[id(param)] for group in optimizer.param_groups for param in group["params"]]


def load_foreign_optimizer(path: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, fsdp: bool) -> None:
    """Load the optimizer state at ``path`` (the other launcher's format) into ``optimizer``, by parameter name."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    names = parameter_names(model, optimizer)
    if fsdp:  # positions -> names; FSDP shards each full tensor onto this process
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        by_name: dict[str, Any] = {
            "state": {names[i]: state for i, state in saved["state"].items()},
            "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in saved["param_groups"]],
        }
        set_optimizer_state_dict(model, optimizer, by_name, options=StateDictOptions(full_state_dict=True))
        return
    position = {name: i for i, name in enumerate(names)}  # names -> positions
    optimizer.load_state_dict(
        {
            "state": {position[name]: state for name, state in saved["state"].items()},
            "param_groups": [{**g, "params": [position[n] for n in g["params"]]} for g in saved["param_groups"]],
        }
    )
