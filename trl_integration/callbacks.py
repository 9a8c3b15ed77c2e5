"""``DoraDynamicsCallback``: the paper's magnitude and direction change, logged while training.

Liu et al. 2024, section 2.2 (weight decomposition analysis): for a fine-tuned weight ``W'`` and
the pre-trained ``W0``, per output unit ``n``,

    delta_M = mean_n | ||W'_n|| - ||W0_n|| |          delta_D = mean_n (1 - cos(W'_n, W0_n))

(the paper's columns are PEFT's rows). For DoRA ``||W'_n|| = m_n`` and ``W'_n`` points along
``V_n = W0_n + s (B A)_n``; for LoRA ``W'_n = V_n``. Both come from the factors, without building
``V`` (see :mod:`dora_plugins.dora`). Logged per target module (``q_proj``, ``v_proj``, ...: the mean
over layers) as ``dora/<module>/delta_m`` and ``dora/<module>/delta_d``, through ``trainer.log``,
so every logger the trainer reports to (console, TensorBoard, W&B, ``log_history``) gets them.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from transformers import Trainer, TrainerCallback

from dora_plugins import dora


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
        for delta_m, delta_d in _layer_dynamics(module):
            entry = sums[name.rsplit(".", 1)[-1]]
            entry[0] += delta_m.sum().item()
            entry[1] += delta_d.sum().item()
            entry[2] += delta_m.numel()
    stats = {}
    for target, (total_m, total_d, count) in sorted(sums.items()):
        stats[f"dora/{target}/delta_m"] = total_m / count
        stats[f"dora/{target}/delta_d"] = total_d / count
    return stats


def _layer_dynamics(module):
    """Yield ``(|m_t - m_0|, 1 - cos)`` (out,) per active adapter of a PEFT LoRA layer; nothing otherwise."""
    if not hasattr(module, "lora_A") or getattr(module, "merged", False):
        return
    weight = module.get_base_layer().weight
    sharded = weight.numel() == 0 or hasattr(weight, "placements")  # ZeRO-3 / FSDP1 / FSDP2 (DTensor)
    if sharded or weight.dim() != 2 or not weight.is_floating_point():
        return  # the full weight is not on this process (sharded), or it is quantized
    if getattr(module, "fan_in_fan_out", False):
        weight = weight.t()  # (out, in)
    for adapter in module.active_adapters:
        if adapter not in module.lora_A:
            continue
        lora_A = module.lora_A[adapter].weight  # (r, in)
        lora_B = module.lora_B[adapter].weight  # (out, r)
        scaling = module.scaling[adapter]
        weight_sq = dora.base_row_norm_sq(weight)  # (out,)
        cross, quad = dora.norm_terms(weight, lora_A, lora_B)
        norm = dora.row_norm(weight_sq, cross, quad, scaling)  # ||V_n||: (out,)
        dot = weight_sq + scaling * cross  # <V_n, W0_n>: (out,)
        base_norm = weight_sq.sqrt()
        magnitudes = getattr(module, "lora_magnitude_vector", {})
        magnitude = magnitudes[adapter].weight.to(norm.dtype) if adapter in magnitudes else norm
        cos = dot / (norm * base_norm).clamp_min(dora.NORM_EPS)
        yield (magnitude - base_norm).abs(), 1.0 - cos
