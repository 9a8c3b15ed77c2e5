"""``DoraArguments``: the options ``dora sft`` adds to TRL's (``ScriptArguments``, ``SFTConfig``, ``ModelConfig``).

The training options that Python users need too (``global_batch_size``, ``max_per_device_train_batch_size``,
``precision``) live in :class:`~trl_integration.sft_config.DoraSFTConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DoraArguments:
    """Adapter preset, DoRA options and the LLM-Adapters data options of the paper's ``finetune.py``."""

    preset: str = field(
        default="dora",
        metadata={
            "help": "Adapter preset (see 'dora plugins'): dora (r=32), dora_half (DoRA-dagger, r=16), lora, or a "
            "plugin's. The --lora_* flags override its values."
        },
    )
    detach_norm: bool = field(
        default=True,
        metadata={"help": "DoRA presets: treat the weight norm as a constant in backward (paper section 4.3)."},
    )
    magnitude_only_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "DoRA presets: modules where only the magnitude trains, W' = m * W0 / ||W0|| (the paper's "
            "--Wdecompose_target_modules); not in --lora_target_modules."
        },
    )
    train_on_inputs: bool = field(
        default=True,
        metadata={
            "help": "Loss on the whole text, as the paper (finetune.py train_on_inputs=True); false: loss on the "
            "response only (prompt tokens masked)."
        },
    )
    val_set_size: int = field(
        default=0,
        metadata={"help": "Records held out for evaluation (the paper: 120, split with seed 42); 0: none."},
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Train into an output_dir that is not empty: an earlier dora sft run there is started over (its "
            "checkpoints and adapter files are deleted when training starts); other files stay. Without it, such a "
            "folder is refused (use --resume_from_checkpoint to continue the earlier run)."
        },
    )
    merged_output_dir: str | None = field(
        default=None,
        metadata={"help": "Also write the base model with the adapter merged in here (a plain transformers model)."},
    )
    overwrite_merged_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace an existing non-empty merged_output_dir; its old contents stay until the new model is "
            "complete."
        },
    )
    dry_run: bool = field(
        default=False,
        metadata={
            "help": "Print the plan (world size, batches, steps, warmup, eval and save points, trainable parameters, "
            "dtypes, a GPU memory estimate) from the model's config and the dataset, then exit: nothing is loaded "
            "or written. Honours WORLD_SIZE (e.g. WORLD_SIZE=8 dora sft ... --dry_run)."
        },
    )
