"""The Python training snippet of docs/training.md runs as written on this machine (a CPU will do)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TRAINING_DOC = Path(__file__).resolve().parents[2] / "docs" / "training.md"


def documented_training_snippet() -> str:
    """The first Python block of the 'From Python' section of docs/training.md."""
    section = TRAINING_DOC.read_text().split("## From Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_documented_training_snippet_runs_as_written(tmp_path, tiny_model_dir, boolq_records):
    snippet = documented_training_snippet()
    data = tmp_path / "commonsense_sample.json"
    data.write_text(json.dumps(boolq_records[:136]))  # 120 held out, as the snippet says: 16 train, one step an epoch
    # Only the model and the data change: a tiny local model and a local sample instead of LLaMA-2 and 170k records.
    script = re.sub(r'^base = ".*?"', f'base = "{tiny_model_dir}"', snippet, count=1, flags=re.M)
    script = re.sub(r'^data = ".*?"', f'data = "{data}"', script, count=1, flags=re.M)
    assert script.count(str(tiny_model_dir)) == 1 and script.count(str(data)) == 1
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (tmp_path / "out").iterdir()}
    state = json.loads(next((tmp_path / "out").glob("checkpoint-*/trainer_state.json")).read_text())
    assert state["global_step"] == 3  # 3 epochs of one global batch of 16
