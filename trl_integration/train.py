"""A ``dora sft`` run: checks everything, then trains with :class:`DoraSFTTrainer` and saves.

Every check (preset, dataset file and records, target modules, evaluation split) runs in
:func:`prepare`, before the first training step.
"""

from __future__ import annotations

from .arguments import DoraArguments
from .callbacks import DoraDynamicsCallback
from .data import load_records, sft_datasets
from .peft_config import build_peft_config, check_target_modules
from .trainer import DoraSFTTrainer


def prepare(script_args, training_args, model_args, dora_args: DoraArguments) -> DoraSFTTrainer:
    """The trainer of a run (TRL's argument dataclasses plus ours), after every check has passed."""
    from transformers import AutoTokenizer

    peft_config = build_peft_config(dora_args.preset, model_args, dora_args.detach_norm)
    if not script_args.dataset_name:
        raise ValueError("No dataset: pass --dataset_name (a local LLM-Adapters JSON file or a hub dataset id).")
    if not model_args.model_name_or_path:
        raise ValueError("No model: pass --model_name_or_path (a local directory or a hub id).")
    if not dora_args.val_set_size and training_args.eval_strategy != "no":
        raise ValueError(
            f"eval_strategy={training_args.eval_strategy.value!r} needs held-out records: set --val_set_size "
            "(the paper: 120) or --eval_strategy no."
        )
    records = load_records(script_args.dataset_name, script_args.dataset_config, script_args.dataset_train_split)
    remote = training_args.trust_remote_code
    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path, revision=model_args.model_revision, trust_remote_code=remote
    )
    cutoff = training_args.max_length
    train_set, eval_set = sft_datasets(
        records, tokenizer, cutoff, dora_args.train_on_inputs, dora_args.val_set_size, seed=42
    )
    model = load_model(model_args, trust_remote_code=remote)
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
    return trainer


def load_model(model_args, trust_remote_code: bool = False):
    """The base model as TRL's ``sft`` script loads it (dtype, attention, quantization from ``ModelConfig``)."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl import get_quantization_config

    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    quantization_config = get_quantization_config(model_args)
    return AutoModelForCausalLM.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=dtype,
        quantization_config=quantization_config,
        device_map=_kbit_device_map() if quantization_config is not None else None,
    )


def _kbit_device_map():
    from accelerate import PartialState

    return {"": PartialState().local_process_index}


def run(trainer: DoraSFTTrainer, model_args, dora_args: DoraArguments) -> None:
    """Train (resuming when asked), save the adapter in PEFT format, and merge when asked."""
    args = trainer.args
    resume = args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "last"):
        resume = True  # the latest checkpoint-N in output_dir
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(args.output_dir)
    if dora_args.merged_output_dir and trainer.accelerator.is_main_process:
        from dora_plugins.cli.merge import merge

        merge(model_args.model_name_or_path, args.output_dir, dora_args.merged_output_dir, dtype=model_args.dtype)
    trainer.accelerator.wait_for_everyone()
