"""``DoraSFTConfig``: TRL's ``SFTConfig`` that means the same run on any machine.

- ``global_batch_size``: examples per optimizer step over all processes. Per-device batch and gradient
  accumulation are derived from the data-parallel degree the run starts with (see
  :mod:`trl_integration.batch`); an explicit ``per_device_train_batch_size`` or
  ``gradient_accumulation_steps`` wins, with a warning when the global batch then differs.
- ``precision``: ``auto`` or ``paper`` (see :mod:`trl_integration.precision`); bf16 only where the GPU has it,
  so the same code runs on a CPU, where ``use_cpu`` is set and everything stays fp32 (a log line says so).

- ``ddp_find_unused_parameters`` defaults to False: every adapter parameter is used in every forward.

Everything else is ``SFTConfig``'s, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers.utils import logging
from trl import SFTConfig

from .batch import BatchPlan, plan_batch
from .precision import gpu_half_dtype, mixed_precision

logger = logging.get_logger(__name__)


@dataclass
class DoraSFTConfig(SFTConfig):
    """``SFTConfig`` plus a machine-independent global batch and a precision policy; see the module docstring."""

    # None where TrainingArguments declares a value: "derive it" (the split, the precision policy); __post_init__
    # replaces every None before anything reads it.
    per_device_train_batch_size: int | None = field(  # type: ignore[assignment]
        default=None,
        metadata={
            "metavar": "N",
            "help": "Batch per device and forward pass. Default: derived from global_batch_size, else 8 (TRL's). "
            "Set explicitly, it wins over global_batch_size.",
        },
    )
    gradient_accumulation_steps: int | None = field(  # type: ignore[assignment]
        default=None,
        metadata={
            "metavar": "N",
            "help": "Forward passes per optimizer step. Default: derived from global_batch_size, else 1.",
        },
    )
    gradient_checkpointing: bool | None = field(  # type: ignore[assignment]
        default=None,
        metadata={
            "help": "Deprecated alias of activation_checkpointing (transformers 5). Default: on, as in TRL.",
            "nargs": "?",
            "const": True,
        },
    )
    fp16: bool | None = field(  # type: ignore[assignment]
        default=None,
        metadata={"help": "fp16 mixed precision. Default: chosen by precision (on a GPU without bf16)."},
    )
    global_batch_size: int | None = field(
        default=None,
        metadata={
            "metavar": "N",
            "help": "Examples per optimizer step over all processes (the paper: 16). Per-device batch x "
            "accumulation follow from the number of processes; the world size must divide it.",
        },
    )
    max_per_device_train_batch_size: int | None = field(
        default=None,
        metadata={
            "metavar": "N",
            "help": "Largest per-device batch that fits your GPU: with global_batch_size, the per-device batch is "
            "the largest divisor of the per-process share up to this, and accumulation makes up the rest.",
        },
    )
    precision: str = field(
        default="auto",
        metadata={
            "help": "auto: base weights and autocast in bf16 where the GPU has it, else fp16; paper: fp16 weights "
            "and fp16 mixed precision, exactly as the paper's finetune.py. Adapters and magnitude stay fp32; "
            "without a CUDA GPU everything is fp32. Explicit --bf16 / --fp16 / --dtype win.",
            "choices": ["auto", "paper"],
        },
    )

    def __post_init__(self):
        if self.activation_checkpointing is None and self.gradient_checkpointing is None:
            self.activation_checkpointing = True  # TRL's default, without the deprecation warning of its old name
        if self.ddp_find_unused_parameters is None:
            # Every adapter parameter takes part in every forward. Left None, transformers makes DDP search the
            # autograd graph for unused ones on each step of a PeftModel (and DDP warns that it found none).
            self.ddp_find_unused_parameters = False
        self._set_mixed_precision()
        requested = (self.per_device_train_batch_size, self.gradient_accumulation_steps)
        # Provisional values for SFTConfig's own checks; the split needs the world size, known only after them.
        self.per_device_train_batch_size = requested[0] or 8
        self.gradient_accumulation_steps = requested[1] or 1
        super().__post_init__()
        self._own_mixed_precision()
        self.batch_plan = plan_batch(
            self.global_batch_size,
            self.world_size * max(1, self.n_gpu),  # processes, or the GPUs of one DataParallel process
            self.max_per_device_train_batch_size,
            *requested,
        )
        self.requested_batch = requested
        self.per_device_train_batch_size = self.batch_plan.per_device
        self.gradient_accumulation_steps = self.batch_plan.accumulation
        if self.batch_plan.mismatch():
            logger.warning(self.batch_plan.mismatch())

    def _set_mixed_precision(self) -> None:
        """bf16 / fp16 from ``precision`` unless set explicitly; ``use_cpu`` where there is no accelerator."""
        import torch

        gpu_half = gpu_half_dtype()
        amp = mixed_precision(self.precision, gpu_half)
        if self.bf16 is None and self.fp16 is None:
            self.bf16, self.fp16 = amp == "bfloat16", amp == "float16"
            if gpu_half is None:
                logger.warning(
                    "No CUDA GPU: bf16 is off; the run computes in float32 (its setup: line shows each part's dtype)."
                )
        self.bf16, self.fp16 = bool(self.bf16), bool(self.fp16)
        accelerator = getattr(torch, "accelerator", None)
        if not (accelerator.is_available() if accelerator is not None else torch.cuda.is_available()):
            self.use_cpu = True  # DDP on gloo when several processes are launched, instead of N separate runs

    def _own_mixed_precision(self) -> None:
        """The mixed precision of ``precision`` / ``--bf16`` / ``--fp16``, not the launcher's.

        ``TrainingArguments`` starts from ``ACCELERATE_MIXED_PRECISION``, which ``accelerate launch`` sets from its
        config file (TRL's configs say bf16), and keeps it unless bf16 or fp16 is on: a run that chose fp32 (no
        CUDA GPU, or ``--bf16 false``) would then autocast in bf16 anyway, and FSDP would compute in bf16.
        """
        import os

        ours = "bf16" if self.bf16 else "fp16" if self.fp16 else "no"
        launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
        if launcher != ours and self.mixed_precision != "fp8":
            logger.warning(
                f"The launcher's mixed precision {launcher!r} (accelerate config / --mixed_precision) is ignored: "
                f"this run's precision gives {ours!r}. Set --bf16 / --fp16 to choose another."
            )
            self.mixed_precision = ours
            if self.deepspeed_plugin is not None and not self.deepspeed:  # built from the launcher's variables
                from accelerate.utils import DeepSpeedPlugin

                self.deepspeed_plugin = DeepSpeedPlugin()
                self.deepspeed_plugin.set_mixed_precision(ours)
                self.deepspeed_plugin.set_deepspeed_weakref()

    def base_dtype(self) -> str:
        """The dtype to load the base model in: that of the mixed precision, so no weight is cast per product."""
        return "bfloat16" if self.bf16 else "float16" if self.fp16 else "float32"

    def plan_for(self, data_parallel: int) -> BatchPlan:
        """The batch split this configuration gets under ``data_parallel`` replicas (for a dry run)."""
        return plan_batch(
            self.global_batch_size, data_parallel, self.max_per_device_train_batch_size, *self.requested_batch
        )
