"""One global batch whatever the machine: per-device batch x accumulation x data-parallel processes.

A recipe fixes the number of examples per optimizer step (``global_batch_size``: the paper's 16).
The machine decides how they are split: the data-parallel degree (processes under ``torchrun`` /
``accelerate launch``, or GPUs under one process's DataParallel) and the largest per-device batch
that fits (``max_per_device_train_batch_size``). The rest is gradient accumulation. Steps, warmup,
evaluation and checkpoints then fall on the same examples on 1 GPU or 64.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from dora_plugins.errors import ConfigError


@dataclass(frozen=True)
class BatchPlan:
    """How the examples of one optimizer step are split, and whether that matches the requested global batch."""

    per_device: int
    accumulation: int
    data_parallel: int
    requested: int | None  # the recipe's global batch; None when the run does not set one

    @property
    def effective(self) -> int:
        return self.per_device * self.accumulation * self.data_parallel

    def describe(self) -> str:
        processes = "process" if self.data_parallel == 1 else "processes"
        return (
            f"effective batch: {self.effective} (= {self.per_device} per device x {self.accumulation} accumulation "
            f"x {self.data_parallel} {processes})"
        )

    def mismatch(self) -> str | None:
        """A warning when explicit per-device / accumulation values override the recipe's global batch."""
        if self.requested is None or self.effective == self.requested:
            return None
        return (
            f"The explicit per-device batch / accumulation give an effective batch of {self.effective}, not the "
            f"recipe's global_batch_size {self.requested}: steps, warmup and checkpoints cover other examples than "
            "the recipe's. Drop --per_device_train_batch_size / --gradient_accumulation_steps to keep the recipe's."
        )


def plan_batch(
    global_batch: int | None,
    data_parallel: int,
    max_per_device: int | None = None,
    per_device: int | None = None,
    accumulation: int | None = None,
) -> BatchPlan:
    """Split ``global_batch`` over ``data_parallel`` replicas; explicit ``per_device`` / ``accumulation`` win.

    Without a global batch, TRL's defaults apply (8 per device, no accumulation), as in ``trl sft``.
    """
    for name, value in (("per_device_train_batch_size", per_device), ("gradient_accumulation_steps", accumulation)):
        if value is not None and value < 1:
            raise ConfigError(f"{name}={value} must be at least 1, or left unset to derive it from global_batch_size.")
    if global_batch is None:
        return BatchPlan(per_device or 8, accumulation or 1, data_parallel, None)
    if global_batch < 1:
        raise ConfigError(f"global_batch_size={global_batch} must be a positive number of examples (the paper: 16).")
    share = global_batch // data_parallel  # examples per replica and optimizer step
    if per_device is not None:
        return BatchPlan(per_device, accumulation or max(1, share // per_device), data_parallel, global_batch)
    if accumulation is not None:
        return BatchPlan(max(1, share // accumulation), accumulation, data_parallel, global_batch)
    if global_batch % data_parallel:
        raise ConfigError(
            f"global_batch_size {global_batch} cannot be split over {data_parallel} data-parallel processes; run on "
            f"a number of processes that divides it ({', '.join(map(str, _divisors(global_batch)))}), or set "
            f"--global_batch_size to a multiple of {data_parallel}."
        )
    limit = share if max_per_device is None else max_per_device
    if limit < 1:
        raise ConfigError(f"max_per_device_train_batch_size={max_per_device} must be at least 1.")
    per_device = max(d for d in _divisors(share) if d <= limit)
    return BatchPlan(per_device, share // per_device, data_parallel, global_batch)


def steps_per_epoch(examples: int, plan: BatchPlan) -> int:
    """Optimizer steps in one pass over ``examples``, as ``transformers.Trainer`` counts them.

    Each replica gets ``ceil(examples / (per_device x replicas))`` batches (the last one short or padded);
    a step takes ``accumulation`` of them, the last step of an epoch what is left.
    """
    batches = math.ceil(examples / (plan.per_device * plan.data_parallel))
    return max(math.ceil(batches / plan.accumulation), 1)


def launch_data_parallel(use_cpu: bool = False) -> int:
    """Data-parallel replicas of the run being launched, read from the environment without starting it.

    ``WORLD_SIZE`` as ``torchrun`` and ``accelerate launch`` set it; a single process on a machine with several
    CUDA GPUs uses them all through DataParallel, as ``transformers.Trainer`` does.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 or use_cpu:
        return world_size
    import torch

    return max(torch.cuda.device_count(), 1) if torch.cuda.is_available() else 1


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]
