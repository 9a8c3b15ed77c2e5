"""``DoraSFTTrainer``: TRL's ``SFTTrainer`` whose saves never leave a half-written checkpoint or adapter.

transformers writes ``checkpoint-N`` in place, so a crash during a save leaves a partial folder
that ``resume_from_checkpoint=True`` then picks as the latest. Here every checkpoint is written
under ``<output_dir>/.partial/checkpoint-N`` and renamed into place only once complete (on one
file system a rename is atomic), and the final adapter files are written beside their target
and moved over it with ``os.replace``. The adapter itself is PEFT's, saved by PEFT.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import torch.distributed as dist
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints
from trl import SFTTrainer

STAGING_DIR = ".partial"  # not a "checkpoint-N" name, so get_last_checkpoint never returns it
# Moved last, so that a crash while moving leaves the previous weights with, at worst, a newer config.
WEIGHT_SUFFIXES = (".safetensors", ".bin")


class DoraSFTTrainer(SFTTrainer):
    """``SFTTrainer`` with crash-safe checkpoints (staged, then renamed) and a crash-safe final save."""

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
        if os.path.exists(final):  # re-saving the same step (e.g. the last step once more)
            shutil.rmtree(final)
        os.rename(staged, final)
        shutil.rmtree(os.path.dirname(staged), ignore_errors=True)
        rotate_checkpoints(
            output_dir=os.path.dirname(final),
            save_total_limit=self.args.save_total_limit,
            best_model_checkpoint=self.state.best_model_checkpoint,
            use_mtime=False,
        )

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return super()._save(output_dir, state_dict=state_dict)
        os.makedirs(output_dir, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".saving-", dir=output_dir)
        try:
            super()._save(staging, state_dict=state_dict)
            files = sorted(os.listdir(staging), key=lambda f: f.endswith(WEIGHT_SUFFIXES))
            for file in files:
                os.replace(os.path.join(staging, file), os.path.join(output_dir, file))
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
