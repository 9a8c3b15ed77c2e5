"""A ``dora sft`` run: checks everything, then trains with :class:`DoraSFTTrainer` and saves.

Every check (outputs, model, preset, dataset file and records, resume checkpoint, evaluation split) runs
in :func:`check_run` before anything heavy loads (``dora sft --dry_run`` runs the same checks); the target
modules are checked once the model is there, before the first training step.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import cast

from dora_plugins.errors import MissingFileError
from dora_plugins.models import check_model_source
from dora_plugins.outputs import start_run_folder
from dora_plugins.pull import resolve_model

from .arguments import DoraArguments
from .callbacks import DoraDynamicsCallback
from .data import check_val_set_size, load_records, sft_datasets
from .peft_config import build_peft_config, check_target_modules
from .preflight import COMMAND, check_values
from .setup_report import SetupReportCallback
from .trainer import DoraSFTTrainer


def check_run(script_args, training_args, model_args, dora_args: DoraArguments):
    """Every check that needs no model weights, cheapest first; returns the PEFT config and the records."""
    peft_config = build_peft_config(
        dora_args.preset, model_args, dora_args.detach_norm, dora_args.magnitude_only_modules
    )
    check_values(
        argparse.Namespace(**{**vars(script_args), **vars(training_args), **vars(model_args), **vars(dora_args)})
    )
    model_args.model_name_or_path = resolve_model(model_args.model_name_or_path)
    check_model_source(model_args.model_name_or_path)
    training_args.resume_from_checkpoint = resume_checkpoint(training_args)
    records = load_records(script_args.dataset_name, script_args.dataset_config, script_args.dataset_train_split)
    check_val_set_size(dora_args.val_set_size, len(records))
    return peft_config, records


def prepare(script_args, training_args, model_args, dora_args: DoraArguments) -> DoraSFTTrainer:
    """The trainer of a run (TRL's argument dataclasses plus ours), after every check has passed."""
    from transformers import AutoTokenizer

    peft_config, records = check_run(script_args, training_args, model_args, dora_args)
    remote = training_args.trust_remote_code
    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path, revision=model_args.model_revision, trust_remote_code=remote
    )
    cutoff = training_args.max_length
    train_set, eval_set = sft_datasets(
        records, tokenizer, cutoff, dora_args.train_on_inputs, dora_args.val_set_size, seed=42
    )
    model = load_model(model_args, model_args.dtype or training_args.base_dtype(), trust_remote_code=remote)
    check_target_modules(model, peft_config)
    trainer = DoraSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.add_callback(DoraDynamicsCallback(trainer))
    trainer.add_callback(SetupReportCallback(trainer))
    return trainer


def resume_checkpoint(training_args) -> str | bool | None:
    """``--resume_from_checkpoint``: ``true``/``last`` is the latest complete checkpoint of output_dir, which must
    exist; a path must be a checkpoint folder. Checked now, before the model loads."""
    from transformers.trainer_utils import get_last_checkpoint

    resume = training_args.resume_from_checkpoint
    if resume in (None, False) or (isinstance(resume, str) and resume.lower() in ("false", "")):
        return None
    output_dir = Path(training_args.output_dir)
    if resume is True or resume.lower() in ("true", "last"):
        last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
        if last is None:
            raise MissingFileError(
                f"--resume_from_checkpoint {resume}: {output_dir} holds no checkpoint-N folder to resume from. "
                "Drop the flag to start a new run, or pass the output_dir of the run to resume."
            )
        return last
    if not (Path(resume) / "trainer_state.json").is_file():
        raise MissingFileError(
            f"--resume_from_checkpoint {resume} is not a checkpoint folder (no trainer_state.json). Pass a "
            "checkpoint-N folder, or 'true' for the latest one in --output_dir."
        )
    return resume


def load_model(model_args, dtype: str, trust_remote_code: bool = False):
    """The base model as TRL's ``sft`` script loads it (attention, quantization from ``ModelConfig``), in ``dtype``."""
    from trl import get_quantization_config

    from dora_plugins.models import load_causal_lm

    quantization_config = get_quantization_config(model_args)
    return load_causal_lm(
        model_args.model_name_or_path,
        dtype,
        revision=model_args.model_revision,
        trust_remote_code=trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        quantization_config=quantization_config,
        device_map=_kbit_device_map() if quantization_config is not None else None,
    )


def _kbit_device_map() -> dict | None:
    """Each process's quantized model on its own GPU; on a machine without one, bitsandbytes runs on the CPU."""
    import torch
    from accelerate import PartialState

    return {"": PartialState().local_process_index} if torch.cuda.is_available() else None


def run(trainer: DoraSFTTrainer, model_args, dora_args: DoraArguments) -> None:
    """Train (resuming when asked), save the adapter in PEFT format, and merge when asked."""
    args = trainer.args
    output_dir = cast(str, args.output_dir)  # declared optional; TrainingArguments.__post_init__ always sets it
    if trainer.accelerator.is_main_process:  # the marker goes in before anything else the run writes
        start_run_folder(output_dir, COMMAND, overwrite=dora_args.overwrite)
    trainer.accelerator.wait_for_everyone()
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model(output_dir)
    if dora_args.merged_output_dir and trainer.accelerator.is_main_process:
        from dora_plugins.merge import merge_adapter

        merge_adapter(
            model_args.model_name_or_path,
            output_dir,
            dora_args.merged_output_dir,
            dtype=model_args.dtype or "auto",
            overwrite=dora_args.overwrite_merged_output_dir,
        )
    trainer.accelerator.wait_for_everyone()
