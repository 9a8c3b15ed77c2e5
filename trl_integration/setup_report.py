"""What the launcher set up, printed once training starts: the parallelism and the dtypes DoRA trains in.

``accelerate launch`` (its config file), FSDP's mixed precision, TRL's k-bit preparation and DeepSpeed each
decide dtypes by their own rules (TRL keeps only parameters named ``lora_magnitude_vector`` out of its k-bit
downcast; FSDP2 computes in its ``param_dtype``). This line states what they decided, read from the prepared
model, so that a run (and the tests) can check it instead of trusting the configuration:

    setup: fsdp2 x 2 processes; mixed precision no; stored: base float32, lora_A float32, lora_B float32,
    magnitude float32; computed in: float32
"""

from __future__ import annotations

import os

import torch
from transformers import TrainerCallback
from transformers.utils import logging

logger = logging.get_logger(__name__)

KINDS = ("lora_A", "lora_B", "lora_magnitude_vector")


def parameter_dtypes(model: torch.nn.Module) -> dict[str, str]:
    """``{"base": ..., "lora_A": ..., "lora_B": ..., "magnitude": ...}``: the dtypes stored (comma-joined if mixed)."""
    found: dict[str, set[str]] = {}
    for name, param in model.named_parameters():
        kind = next((k for k in KINDS if k in name), "base")
        found.setdefault(kind, set()).add(str(param.dtype).removeprefix("torch."))
    names = {"lora_magnitude_vector": "magnitude"}
    return {names.get(kind, kind): ",".join(sorted(dtypes)) for kind, dtypes in sorted(found.items())}


def describe_setup(trainer) -> str:
    """One line: the parallelism, the autocast, each kind of parameter's stored dtype and the compute dtype."""
    accelerator = trainer.accelerator
    state = accelerator.state
    fsdp = getattr(state, "fsdp_plugin", None)
    if fsdp is not None:
        mode = f"fsdp{fsdp.fsdp_version}"
    elif trainer.is_deepspeed_enabled:
        mode = f"deepspeed zero{accelerator.state.deepspeed_plugin.zero_stage}"
    else:
        kind = str(state.distributed_type).rsplit(".", 1)[-1]
        mode = {"NO": "single", "MULTI_CPU": "ddp (gloo)", "MULTI_GPU": "ddp"}.get(kind, kind.lower())
    processes = accelerator.num_processes
    dtypes = parameter_dtypes(trainer.model)
    stored = ", ".join(f"{kind} {dtype}" for kind, dtype in dtypes.items())
    computed = _compute_dtype(fsdp, accelerator.mixed_precision)
    return (
        f"setup: {mode} x {processes} process{'es' if processes > 1 else ''}; mixed precision "
        f"{accelerator.mixed_precision}; stored: {stored}; computed in: {computed}"
    )


def _compute_dtype(fsdp, mixed_precision: str) -> str:
    """FSDP's ``param_dtype`` where its mixed precision policy sets one, else autocast's dtype, else the stored."""
    policy = getattr(fsdp, "mixed_precision_policy", None) if fsdp is not None else None
    param_dtype = getattr(policy, "param_dtype", None)
    if param_dtype is not None:
        return str(param_dtype).removeprefix("torch.")
    return {"bf16": "bfloat16", "fp16": "float16"}.get(mixed_precision, "the stored dtypes")


class SetupReportCallback(TrainerCallback):
    """Print :func:`describe_setup` once the trainer has prepared the model (main process); warn when the
    magnitude is not float32."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        line = describe_setup(self.trainer)
        self.trainer.accelerator.print(line)
        if self.trainer.accelerator.is_main_process and (ignored := launcher_request_ignored(self.trainer)):
            logger.warning(ignored)
        magnitude = parameter_dtypes(self.trainer.model).get("magnitude")
        if magnitude not in (None, "float32") and self.trainer.accelerator.is_main_process:
            logger.warning(f"The DoRA magnitude trains in {magnitude}, not float32 ({line}).")
        return control


def launcher_request_ignored(trainer) -> str | None:
    """A warning when ``accelerate launch`` asked for FSDP or DeepSpeed and the trainer set up something else.

    accelerate 1.16 enables FSDP only for accelerator devices: on the CPU (``use_cpu``, gloo) it silently runs
    DDP, every process holding the whole model. The run is still correct; it is not sharded.
    """
    asked = [
        name
        for name, variable in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED"))
        if os.environ.get(variable, "false").lower() == "true"
    ]
    got = "FSDP" if trainer.is_fsdp_enabled else "DeepSpeed" if trainer.is_deepspeed_enabled else None
    if not asked or asked[0] == got:
        return None
    kind = str(trainer.accelerator.state.distributed_type).rsplit(".", 1)[-1]
    return (
        f"accelerate launch asked for {asked[0]}, but this run is {kind} without sharding (accelerate enables "
        f"{asked[0]} only on GPUs and other accelerators, not with use_cpu): every process holds the whole model."
    )
