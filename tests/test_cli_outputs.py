"""The data-loss cases of every command that writes: refused up front, nothing touched."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
from helpers import make_tiny_llama
from peft import get_peft_model

from dora_plugins import DoraConfig
from dora_plugins.cli import main as dora_main
from dora_plugins.outputs import RUN_MARKER, record_run_files, start_run_folder


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


# Every command that writes, and the folder it writes: (id, argv given the models and the folder, the folder).
WRITERS = [
    ("sft --output_dir", lambda m, d: [*_sft(m), "--output_dir", str(d)], "--output_dir"),
    ("sft --merged_output_dir", lambda m, d: [*_sft(m), "--output_dir", str(d.parent / "run"),
                                              "--merged_output_dir", str(d)], "--merged_output_dir"),
    ("merge --output", lambda m, d: _merge(m, d), "--output"),
    ("analyze --output", lambda m, d: ["analyze", "--base", str(m / "base"), _checkpoint(m), "--output", str(d)],
     "--output"),
    ("demo --output", lambda m, d: ["demo", "--output", str(d)], "--output"),
    ("pull --cache-dir", lambda m, d: ["pull", "smollm2-135m", "--cache-dir", str(d.parent.parent)], "cache folder"),
]  # fmt: skip


def _checkpoint(models) -> str:
    """The adapter as the checkpoint-N folder of a run, which is what dora analyze reads."""
    shutil.copytree(models / "adapter", models / "run" / "checkpoint-2")
    return str(models / "run" / "checkpoint-2")


def _sft(models) -> list[str]:
    data = models / "data.json"
    data.write_text('[{"instruction": "q", "output": "a"}]')
    return ["sft", "--model_name_or_path", str(models / "base"), "--dataset_name", str(data), "--max_steps", "1"]


@pytest.mark.parametrize(("argv", "names"), [(argv, names) for _, argv, names in WRITERS], ids=[w[0] for w in WRITERS])
def test_every_writer_refuses_a_folder_holding_a_users_files_and_names_it(capsys, models, tmp_path, argv, names):
    folder = tmp_path / "users" / "models" / "smollm2-135m"  # the layout of a --cache-dir, for pull
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text('{"mine": true}')
    (folder / "notes.txt").write_text("my notes")
    before = snapshot(folder)
    args = argv(models, folder)
    capsys.readouterr()  # the fixture's progress bars
    assert dora_main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dora {args[0]}: error: "), lines
    assert str(folder) in lines[0] and names in lines[0]
    assert snapshot(folder) == before and sorted(p.name for p in folder.parent.iterdir()) == [folder.name]


def test_table_refuses_an_existing_plot_file(capsys, tmp_path):
    (tmp_path / "table.png").write_bytes(b"my figure")
    assert dora_main(["table", str(tmp_path / "results"), "--plot", str(tmp_path / "table.png")]) == 2
    assert "--plot " + str(tmp_path / "table.png") + " exists. Pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "table.png").read_bytes() == b"my figure"


def _earlier_run(folder):
    """A folder where an earlier run wrote a checkpoint, a staged one and its final files, beside the user's."""
    (folder / "checkpoint-2").mkdir(parents=True)
    (folder / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (folder / ".partial" / "checkpoint-4").mkdir(parents=True)
    (folder / "checkpoint-notes").mkdir()  # the user's, though named like one: it holds no trainer state
    for name in ("adapter_model.safetensors", "adapter_config.json", "README.md", "notes.txt"):
        (folder / name).write_text(name)
    (folder.parent / "outside.txt").write_text("mine")
    start_run_folder(folder, "dora sft", overwrite=False)
    record_run_files(folder, ["adapter_model.safetensors", "adapter_config.json", "README.md", "../outside.txt"])


def test_overwrite_deletes_only_what_the_earlier_run_wrote(tmp_path):
    folder = tmp_path / "run"
    _earlier_run(folder)
    start_run_folder(folder, "dora sft", overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == sorted([RUN_MARKER, "checkpoint-notes", "notes.txt"])
    assert (folder / "notes.txt").read_text() == "notes.txt" and (tmp_path / "outside.txt").read_text() == "mine"
    assert '"files": []' in (folder / RUN_MARKER).read_text()  # a new run, which has written nothing yet


def test_a_resumed_run_keeps_its_files_and_its_record(tmp_path):
    folder = tmp_path / "run"
    _earlier_run(folder)
    before = snapshot(folder)
    start_run_folder(folder, "dora sft", overwrite=False)
    assert snapshot(folder) == before
