"""The runnable examples that the README quotes."""

from __future__ import annotations

import subprocess
import sys

from helpers import REPO


def test_python_api_example_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "python_api.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "trainable params" in result.stdout
    gap = float(result.stdout.split("max |adapter - merged| logits = ")[1].split(";")[0])
    assert gap < 1e-4
    assert (tmp_path / "merged" / "model.safetensors").is_file()
