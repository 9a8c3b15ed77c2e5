"""``DoraSFTTrainer``: TRL's ``SFTTrainer`` whose saves never leave a half-written checkpoint or adapter.

transformers writes ``checkpoint-N`` in place, so a crash during a save leaves a partial folder
that ``resume_from_checkpoint=True`` then picks as the latest. Here every checkpoint is written
under ``<output_dir>/.partial/checkpoint-N`` and renamed into place only once complete (on one
file system a rename is atomic; re-saving an existing step swaps the folders atomically), and the
final adapter files are written beside their target and moved in by
:func:`dora_plugins.outputs.replace_files`, and listed in the run folder's marker (what a later
``--overwrite`` may delete). The adapter itself is PEFT's, saved by PEFT.
"""

from __future__ import annotations

import os
import shutil
from typing import cast

import torch
import torch.distributed as dist
from transformers.trainer import SCHEDULER_NAME, TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints
from trl import SFTTrainer

from dora_plugins.outputs import STAGING, record_run_files, replace_files, swap_in

from .checkpoints import foreign_optimizer, is_fsdp_adapter_checkpoint, load_foreign_optimizer

STAGING_DIR = STAGING  # ".partial": not a "checkpoint-N" name, so get_last_checkpoint never returns it


class DoraSFTTrainer(SFTTrainer):
    """``SFTTrainer`` with crash-safe checkpoints (staged, then renamed) and a crash-safe final save, whose
    checkpoints resume under FSDP and without it alike (see :mod:`trl_integration.checkpoints`)."""

    _staging_root: str | None = None

    def _get_output_dir(self, trial) -> str:
        return self._staging_root or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        run_dir = super()._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        self._staging_root = os.path.join(run_dir, STAGING_DIR)
        if self.args.should_save:  # what an earlier crash left there must not mix into this checkpoint
            shutil.rmtree(self._staging_root, ignore_errors=True)
        _barrier()
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_root = None
        _barrier()
        if self.args.should_save:
            self._publish_checkpoint(os.path.join(run_dir, STAGING_DIR, name), os.path.join(run_dir, name))
        _barrier()

    def _publish_checkpoint(self, staged: str, final: str) -> None:
        """Point the trainer state at ``final``, then rename the complete ``staged`` folder to ``final``."""
        best = self.state.best_model_checkpoint
        if best and os.path.dirname(best) == os.path.dirname(staged):
            self.state.best_model_checkpoint = os.path.join(os.path.dirname(final), os.path.basename(best))
            self.state.save_to_json(os.path.join(staged, TRAINER_STATE_NAME))
        swap_in(staged, final)  # re-saving a step (e.g. the last one once more) swaps the old folder out
        shutil.rmtree(os.path.dirname(staged), ignore_errors=True)
        rotate_checkpoints(
            output_dir=os.path.dirname(final),
            save_total_limit=self.args.save_total_limit,
            best_model_checkpoint=self.state.best_model_checkpoint,
            use_mtime=False,
        )

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        model = self.model if model is None else model
        if not self.is_fsdp_enabled and is_fsdp_adapter_checkpoint(resume_from_checkpoint):
            # transformers refuses an FSDP checkpoint without FSDP; its adapter file is complete, load it as PEFT does
            model.load_adapter(resume_from_checkpoint, model.active_adapters[0], is_trainable=True)
            return
        super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_optimizer_and_scheduler(self, checkpoint):
        foreign = None if checkpoint is None else foreign_optimizer(checkpoint, self.is_fsdp_enabled)
        if foreign is None or self.is_deepspeed_enabled:
            return super()._load_optimizer_and_scheduler(checkpoint)
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)  # inside accelerate's wrapper
        load_foreign_optimizer(foreign, self.model, optimizer, fsdp=self.is_fsdp_enabled)
        scheduler = torch.load(os.path.join(checkpoint, SCHEDULER_NAME), weights_only=True)
        self.lr_scheduler.load_state_dict(scheduler)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        # TrainingArguments declares output_dir optional; its __post_init__ always sets one.
        output_dir = output_dir if output_dir is not None else cast(str, self.args.output_dir)
        if not self.args.should_save:
            return super()._save(output_dir, state_dict=state_dict)
        names = replace_files(
            output_dir, lambda folder: super(DoraSFTTrainer, self)._save(str(folder), state_dict=state_dict)
        )
        card = ["README.md"] if os.path.isfile(os.path.join(output_dir, "README.md")) else []  # TRL's model card
        record_run_files(output_dir, names + card)  # what --overwrite may delete later; no marker, no record


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
