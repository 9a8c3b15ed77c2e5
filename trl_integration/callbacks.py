"""``DoraDynamicsCallback``: the paper's magnitude and direction change, logged while training.

Liu et al. 2024, section 2.2 (weight decomposition analysis): delta-M (mean | ||W'_n|| - ||W0_n|| |) and delta-D
(mean 1 - cos(W'_n, W0_n)) per weight matrix, computed from the factors by :mod:`dora_plugins.dynamics` (the same
code as ``dora analyze``). Logged per target module (``q_proj``, ``v_proj``, ...: the mean over the output rows of
all layers) as ``dora/<module>/delta_m`` and ``dora/<module>/delta_d``, through ``trainer.log``, so every logger
the trainer reports to (console, TensorBoard, W&B, ``log_history``) gets them.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from transformers import Trainer, TrainerCallback

from dora_plugins.dynamics import adapter_change


class DoraDynamicsCallback(TrainerCallback):
    """Log ``dora/<module>/delta_m`` and ``dora/<module>/delta_d`` at every logging step (main process)."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_log and state.is_world_process_zero:
            stats = weight_dynamics(self.trainer.model)
            if stats:
                # transformers.Trainer.log, not SFTTrainer.log: that one would move its own pending metrics
                # (entropy, token accuracy) into this entry. Logging clears should_log; the step's loss is still due.
                Trainer.log(self.trainer, stats)
                control.should_log = True
        return control


@torch.no_grad()
def weight_dynamics(model) -> dict[str, float]:
    """``{"dora/<module>/delta_m": ..., "dora/<module>/delta_d": ...}`` over the LoRA/DoRA layers of ``model``."""
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for name, module in model.named_modules():
        for change in _layer_changes(module):
            entry = sums[name.rsplit(".", 1)[-1]]
            entry[0] += change.magnitude.sum().item()
            entry[1] += change.direction.sum().item()
            entry[2] += change.magnitude.numel()
    stats = {}
    for target, (total_m, total_d, count) in sorted(sums.items()):
        stats[f"dora/{target}/delta_m"] = total_m / count
        stats[f"dora/{target}/delta_d"] = total_d / count
    return stats


def _layer_changes(module):
    """Yield a :class:`RowChange` per active adapter of a PEFT LoRA layer; nothing otherwise."""
    if not hasattr(module, "lora_A") or getattr(module, "merged", False):
        return
    weight = module.get_base_layer().weight
    sharded = weight.numel() == 0 or hasattr(weight, "placements")  # ZeRO-3 / FSDP1 / FSDP2 (DTensor)
    if sharded or weight.dim() != 2 or not weight.is_floating_point():
        return  # the full weight is not on this process (sharded), or it is quantized
    if getattr(module, "fan_in_fan_out", False):
        weight = weight.t()  # (out, in)
    magnitudes = getattr(module, "lora_magnitude_vector", {})
    for adapter in module.active_adapters:
        if adapter not in module.lora_A:
            continue
        magnitude = magnitudes[adapter].weight if adapter in magnitudes else None  # (out,), DoRA only
        yield adapter_change(
            weight, module.lora_A[adapter].weight, module.lora_B[adapter].weight, module.scaling[adapter], magnitude
        )
