"""``dora sft --dry_run``: the plan of a run, from the model's config and the dataset, before anything loads.

The checks of a real run (:func:`trl_integration.train.check_run`) run first. The model is then built on
PyTorch's meta device from its ``config.json`` (shapes only: no weights, no memory) with the adapter
attached, which gives exact parameter counts; steps, warmup, evaluation and checkpoints follow
``transformers.Trainer``'s arithmetic; memory is estimated by :mod:`trl_integration.memory`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .arguments import DoraArguments
from .batch import BatchPlan, steps_per_epoch
from .memory import GIB, OPTIMIZER_BYTES, Adapted, MemoryEstimate, activation_bytes, model_shape
from .precision import DTYPE_BYTES, describe, gpu_half_dtype, mixed_precision
from .train import check_run


def dry_run(script_args, training_args, model_args, dora_args: DoraArguments, data_parallel: int) -> str:
    """The plan of the run these arguments describe under ``data_parallel`` replicas, as printable lines."""
    peft_config, records = check_run(script_args, training_args, model_args, dora_args)
    config, model = _skeleton(model_args, training_args, peft_config)
    batch = training_args.plan_for(data_parallel)
    examples = len(records) - dora_args.val_set_size
    per_epoch = steps_per_epoch(examples, batch)
    total = (
        training_args.max_steps
        if training_args.max_steps > 0
        else math.ceil(training_args.num_train_epochs * per_epoch)
    )
    adapted = _adapted_modules(model)
    lines = [
        "dora sft dry run: only the model's config and the dataset were read; nothing was written",
        _model_line(model_args.model_name_or_path, config, model),
        f"dataset: {script_args.dataset_name}: {len(records):,} records = {examples:,} for training + "
        f"{dora_args.val_set_size:,} held out (val_set_size)",
        _world_line(data_parallel),
        f"per-device batch: {batch.per_device}, gradient accumulation: {batch.accumulation}",
        batch.describe(),
        f"optimizer steps: {per_epoch:,} per epoch, {total:,} in total"
        + (f" ({training_args.num_train_epochs:g} epochs)" if training_args.max_steps <= 0 else " (max_steps)"),
        f"learning rate: {training_args.learning_rate:.1e}, {training_args.lr_scheduler_type.value} schedule, "
        f"warmup {training_args.get_warmup_steps(total):,} steps",
        *_warmup_lines(training_args, total),
        _points_line("evaluation", training_args.eval_strategy.value, training_args.eval_steps, total, per_epoch),
        _points_line("checkpoints", training_args.save_strategy.value, training_args.save_steps, total, per_epoch)
        + _kept(training_args),
        *_resume_lines(training_args, total),
        _trainable_line(model),
        f"dtypes: {describe(_amp(training_args.base_dtype()), gpu_half_dtype(), _kbit(model_args))}",
    ]
    tokens = batch.per_device * training_args.max_length
    lines += _memory_lines(_estimate(config, model, adapted, training_args, tokens), training_args, batch)
    return "\n".join(lines)


def _skeleton(model_args, training_args, peft_config):
    """The model's config and the adapted model built on the meta device (shapes only)."""
    import torch
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from .peft_config import check_target_modules

    remote = training_args.trust_remote_code
    config = AutoConfig.from_pretrained(
        model_args.model_name_or_path, revision=model_args.model_revision, trust_remote_code=remote
    )
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=remote)
    check_target_modules(model, peft_config)
    return config, get_peft_model(model, peft_config)


def _adapted_modules(model) -> list[Adapted]:
    adapted = []
    for _, module in model.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            dora = "default" in getattr(module, "lora_magnitude_vector", {})
            dropout = getattr(module.lora_dropout["default"], "p", 0.0) > 0  # nn.Dropout, or nn.Identity for 0
            adapted.append(Adapted(module.in_features, module.out_features, module.r["default"], dora, dropout))
    return adapted


def _model_line(name: str, config, model) -> str:
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    base = sum(p.numel() for n, p in model.named_parameters() if not p.requires_grad)
    return (
        f"model: {name} ({config.architectures[0] if config.architectures else config.model_type}, "
        f"{config.num_hidden_layers} layers, hidden {config.hidden_size}; {base:,} parameters"
        + (f", stored as {str(stored).removeprefix('torch.')})" if stored else ")")
    )


def _world_line(data_parallel: int) -> str:
    if "WORLD_SIZE" in os.environ:
        return f"world size: {data_parallel} (WORLD_SIZE)"
    if data_parallel > 1:
        return f"world size: 1 process, DataParallel over {data_parallel} GPUs"
    return "world size: 1 (set WORLD_SIZE, as torchrun does, to plan for more processes)"


def _interval(steps: float | None, total: int) -> int:
    """A step interval as ``transformers`` reads it: a fraction of the run below 1, else a step count."""
    steps = steps or 500
    return math.ceil(total * steps) if steps < 1 else int(steps)


def _points_line(what: str, strategy: str, steps: float | None, total: int, per_epoch: int) -> str:
    if strategy == "no":
        return f"{what}: none"
    if strategy == "epoch":
        return f"{what}: at the end of each epoch (every {per_epoch:,} steps)"
    if strategy == "best":
        return f"{what}: whenever the evaluation improves"
    every = _interval(steps, total)
    points = step_points(every, total)
    if len(points) == 1:
        after = f"; every {every:,} steps would first fall after it" if every > total else ""
        return f"{what}: at step {total:,} only, the end of the run{after}"
    shown = points if len(points) <= 5 else [points[0], points[1], None, points[-2], points[-1]]
    listed = ", ".join("..." if point is None else f"{point:,}" for point in shown)
    end = "; the last at the end of the run" if total % every else ""
    return f"{what}: every {every:,} steps, {len(points):,} in all (steps {listed}{end})"


def step_points(every: int, total: int) -> list[int]:
    """The steps where a "steps" strategy evaluates or saves: each multiple of ``every``, and the last step
    (``transformers.DefaultFlowCallback.on_step_end``)."""
    points = list(range(every, total + 1, every))
    return points if points and points[-1] == total else [*points, total]


def _warmup_lines(training_args, total: int) -> list[str]:
    warmup = training_args.get_warmup_steps(total)
    if warmup <= total:
        return []
    return [
        f"warning: {warmup:,} warmup steps exceed the {total:,} steps of the run, so the learning rate never reaches "
        f"{training_args.learning_rate:.1e}: lower --warmup_steps (a value below 1 is a fraction of the run)"
    ]


def _kept(training_args) -> str:
    parts = []
    if training_args.save_strategy.value != "no" and training_args.save_total_limit:
        parts.append(f"the last {training_args.save_total_limit} kept")
    if training_args.load_best_model_at_end:
        parts.append(f"the best by {training_args.metric_for_best_model} kept and loaded at the end")
    return "; " + ", ".join(parts) if parts else ""


def _resume_lines(training_args, total: int) -> list[str]:
    resume = training_args.resume_from_checkpoint
    if not resume:
        return []
    step = json.loads((Path(resume) / "trainer_state.json").read_text()).get("global_step", 0)
    return [f"resume: from {resume}, at step {step:,} of {total:,}"]


def _trainable_line(model) -> str:
    magnitude = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "lora_magnitude" in n)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    base = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return (
        f"trainable parameters: {trainable:,} = {100 * trainable / base:.2f}% of the base "
        f"(LoRA A and B {trainable - magnitude:,}; magnitude {magnitude:,})"
    )


def _amp(base_dtype: str) -> str | None:
    return None if base_dtype == "float32" else base_dtype


def _kbit(model_args) -> str | None:
    return "4-bit" if model_args.load_in_4bit else "8-bit" if model_args.load_in_8bit else None


def _estimate(config, model, adapted: list[Adapted], training_args, tokens: int) -> MemoryEstimate:
    """Memory per GPU, in the dtype the run gets on a GPU (where this machine has none: a GPU with bf16)."""
    dtype = training_args.base_dtype() if gpu_half_dtype() else mixed_precision(training_args.precision, "bfloat16")
    width = DTYPE_BYTES[dtype or "float32"]
    shape = model_shape(config)
    base = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return MemoryEstimate(
        weights=base * width,
        trainable_state=trainable * OPTIMIZER_BYTES,
        activations=activation_bytes(shape, adapted, width, tokens, checkpointing=False),
        activations_checkpointed=activation_bytes(shape, adapted, width, tokens, checkpointing=True),
    )


def _memory_lines(estimate: MemoryEstimate, training_args, batch: BatchPlan) -> list[str]:
    where = "" if gpu_half_dtype() else "; this machine has no CUDA GPU: figures for one with bf16"
    this_run = "on" if training_args.gradient_checkpointing else "off"
    return [
        f"GPU memory per device (estimate{where}):",
        f"  base weights            {estimate.weights / GIB:6.1f} GiB",
        f"  adapters + AdamW state  {estimate.trainable_state / GIB:6.1f} GiB  (16 bytes per trainable parameter)",
        f"  activations             {estimate.activations_checkpointed / GIB:6.1f} GiB with gradient checkpointing, "
        f"{estimate.activations / GIB:.1f} GiB without ({batch.per_device} x {training_args.max_length} tokens per "
        "device)",
        f"  total                   {estimate.total(True) / GIB:6.1f} GiB with gradient checkpointing, "
        f"{estimate.total(False) / GIB:.1f} GiB without (this run: {this_run})",
        "  how: parameters counted on the meta device, activations per token by the formula in "
        "trl_integration/memory.py;",
        "  not counted: the CUDA context and allocator slack (1-3 GiB); FSDP and ZeRO-3 shard the weights instead",
    ]
