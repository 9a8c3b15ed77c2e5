"""The data-loss cases of ``dora merge``, ``dora sft`` and ``dora demo``: refused up front, nothing touched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from helpers import make_tiny_llama
from peft import get_peft_model

from dora_plugins import DoraConfig
from dora_plugins.cli import main as dora_main


def snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def models(tmp_path):
    """A folder holding a tiny base model and a DoRA adapter for it, as a user keeps them."""
    root = tmp_path / "models"
    base = make_tiny_llama()
    base.save_pretrained(root / "base")
    get_peft_model(base, DoraConfig(r=4, lora_alpha=8)).save_pretrained(root / "adapter")
    (root / "notes.txt").write_text("my notes")
    return root


def _merge(models, output, *extra) -> list[str]:
    inputs = ["--base", str(models / "base"), "--adapter", str(models / "adapter")]
    return ["merge", *inputs, "--output", str(output), *extra]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (lambda m: m / "adapter", "is the adapter"),
        (lambda m: m / "base", "is the base model"),
        (lambda m: m, "contains the base model"),
        (lambda m: m / "adapter" / "merged", "lies inside the adapter"),
    ],
    ids=["adapter", "base", "parent-of-both", "inside-adapter"],
)
def test_merge_refuses_an_output_in_its_inputs_even_with_overwrite(capsys, models, output, message):
    before = snapshot(models)
    assert dora_main(_merge(models, output(models), "--overwrite")) == 2
    err = capsys.readouterr().err
    assert "dora merge: error: " in err and message in err and "Traceback" not in err
    assert snapshot(models) == before


def test_merge_refuses_a_folder_holding_other_files_unless_overwrite(capsys, models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert dora_main(_merge(models, out)) == 2
    assert "already exists and is not empty. Pass --overwrite" in capsys.readouterr().err
    assert snapshot(out) == {"notes.txt": b"keep me"}
    assert dora_main(_merge(models, out, "--overwrite")) == 0  # asked for: replaced, completely
    assert (out / "model.safetensors").is_file() and not (out / "notes.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dora-partial-")]


def test_merge_refuses_a_file_as_output_and_a_name_too_long_before_loading(capsys, models, tmp_path):
    (tmp_path / "file").write_text("x")
    assert dora_main(_merge(models, tmp_path / "file")) == 2
    assert "is an existing file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "x"
    assert dora_main(_merge(models, tmp_path / ("m" * 300))) == 2
    assert "this file system allows" in capsys.readouterr().err


KILLED_MERGE = textwrap.dedent(
    """
    import os, signal, sys
    from dora_plugins import outputs
    from dora_plugins.cli import main
    outputs._exchange = lambda a, b: os.kill(os.getpid(), signal.SIGKILL)   # die at the moment of the swap
    main(sys.argv[1:])
    """
)


def test_merge_killed_at_the_swap_leaves_the_previous_output_whole(models, tmp_path):
    out = tmp_path / "merged"
    assert dora_main(_merge(models, out)) == 0
    before = snapshot(out)
    result = subprocess.run(
        [sys.executable, "-c", KILLED_MERGE, *_merge(models, out, "--overwrite")], capture_output=True, timeout=300
    )
    assert result.returncode == -signal.SIGKILL
    assert snapshot(out) == before
    assert dora_main(_merge(models, out, "--overwrite")) == 0  # the next run cleans what the killed one left
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dora-partial-")]


def test_sft_refuses_a_merged_output_dir_that_is_its_output_dir_before_training(capsys, tmp_path, models):
    data = tmp_path / "data.json"
    data.write_text('[{"instruction": "q", "output": "a"}]')
    run = tmp_path / "run"
    args = ["sft", "--model_name_or_path", str(models / "base"), "--dataset_name", str(data), "--output_dir", str(run),
            "--merged_output_dir", str(run), "--max_steps", "1"]  # fmt: skip
    assert dora_main(args) == 2
    assert "--merged_output_dir" in (err := capsys.readouterr().err) and "is the training output" in err
    assert not run.exists()


def test_sft_refuses_an_output_dir_inside_the_base_model(capsys, tmp_path, models):
    data = tmp_path / "data.json"
    data.write_text('[{"instruction": "q", "output": "a"}]')
    args = ["sft", "--model_name_or_path", str(models / "base"), "--dataset_name", str(data),
            "--output_dir", str(models / "base" / "run"), "--max_steps", "1"]  # fmt: skip
    assert dora_main(args) == 2
    assert "--output_dir" in (err := capsys.readouterr().err) and "lies inside the base model" in err
    assert not (models / "base" / "run").exists()


def test_demo_refuses_a_non_empty_output_without_overwrite(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    assert dora_main(["demo", "--output", str(tmp_path)]) == 2
    assert "Pass --overwrite" in capsys.readouterr().err
    assert snapshot(tmp_path) == {"notes.txt": b"mine"}


def test_debug_shows_the_traceback_of_a_user_error(models, tmp_path):
    env = {**os.environ, "DORA_DEBUG": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "dora_plugins", *_merge(models, models / "adapter")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" in result.stderr and "OutputError" in result.stderr
