"""Writers never destroy what they did not create: output checks, atomic swaps, and a kill at every step.

The fault-injection tests run a writer in a subprocess that SIGKILLs itself at the n-th call of one of the
file-system operations the writer uses, for every n the writer reaches, and then check what is on disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dora_plugins import outputs
from dora_plugins.errors import OutputError

KILL_POINTS = ("os.rename", "os.replace", "os.unlink", "shutil.rmtree", "outputs._exchange", "outputs.make_partial")

HARNESS = textwrap.dedent(
    """
    import json, os, shutil, signal, sys
    from pathlib import Path
    from dora_plugins import outputs

    scenario, point, nth, root = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    counts = {}

    def killing(name, function):
        def wrapper(*args, **kwargs):
            counts[name] = counts.get(name, 0) + 1
            if name == point and counts[name] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
            return function(*args, **kwargs)
        return wrapper

    for name in %(points)r:
        owner_name, attr = name.split(".")
        owner = {"os": os, "shutil": shutil, "outputs": outputs}[owner_name]
        setattr(owner, attr, killing(name, getattr(owner, attr)))
    if scenario.endswith("two_step"):
        outputs._exchange = lambda a, b: False

    def write_tree(files):
        def write(folder):
            for rel, text in files.items():
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                (folder / rel).write_text(text)
        return write

    new = json.loads(sys.argv[5])
    if scenario.startswith("directory"):
        outputs.replace_directory(root / "target", write_tree(new))
    else:
        outputs.replace_files(root / "target", write_tree(new))
    print(json.dumps(counts))
    """
) % {"points": KILL_POINTS}

OLD = {"a.txt": "old", "sub/b.txt": "old"}
NEW = {"a.txt": "new", "c.txt": "new", "sub/d.txt": "new"}


def tree(folder: Path) -> dict[str, str] | None:
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_text() for p in folder.rglob("*") if p.is_file()}


def write_tree(folder: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)


def run_writer(scenario: str, root: Path, new: dict, point: str = "", nth: int = 0) -> subprocess.CompletedProcess:
    args = [sys.executable, "-c", HARNESS, scenario, point, str(nth), str(root), json.dumps(new)]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(outputs.PARTIAL_PREFIX))


def kill_points(scenario: str, tmp_path: Path, setup, new: dict = NEW) -> list[tuple[str, int]]:
    """Every (operation, n) that an uninterrupted run of the writer reaches."""
    root = tmp_path / "count"
    setup(root)
    result = run_writer(scenario, root, new)
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout.splitlines()[-1])
    points = [(name, n) for name, count in counts.items() for n in range(1, count + 1)]
    assert len(points) >= 3, counts  # a writer with fewer steps would not be tested much
    return points


def _old_target(root: Path) -> None:
    write_tree(root / "target", OLD)


@pytest.mark.parametrize("scenario", ["directory", "directory_two_step"])
def test_a_kill_at_any_step_of_a_directory_swap_leaves_the_old_or_the_new_folder(tmp_path, scenario):
    for point, nth in kill_points(scenario, tmp_path, _old_target):
        root = tmp_path / f"{point}-{nth}"
        _old_target(root)
        result = run_writer(scenario, root, NEW, point, nth)
        assert result.returncode == -9, (point, nth, result.stderr)
        now = tree(root / "target")
        if now is None:  # only between the two renames of the fallback swap: the old folder waits beside it
            olds = [root / name for name in partials(root) if name.endswith("-old")]
            assert scenario == "directory_two_step" and [tree(p) for p in olds] == [OLD], (point, nth)
            outputs.remove_stale_partials(root)  # what the next writer does first: put it back
            assert tree(root / "target") == OLD
        assert tree(root / "target") in (OLD, NEW), (point, nth, now)
        result = run_writer(scenario, root, NEW)  # the next run completes and cleans up
        assert result.returncode == 0, result.stderr
        assert tree(root / "target") == NEW and partials(root) == [], (point, nth)


def test_a_kill_at_any_step_of_creating_a_new_folder_leaves_nothing_or_the_new_folder(tmp_path):
    for point, nth in kill_points("directory", tmp_path, lambda root: root.mkdir()):
        root = tmp_path / f"{point}-{nth}"
        root.mkdir()
        assert run_writer("directory", root, NEW, point, nth).returncode == -9
        assert tree(root / "target") in (None, NEW), (point, nth)


def _adapter_run_dir(root: Path) -> None:
    """A training output_dir: a checkpoint, and an older final adapter of another rank."""
    write_tree(root / "target", {"checkpoint-4/adapter_model.safetensors": "ckpt", "notes.txt": "mine"})
    write_tree(root / "target", {"adapter_config.json": "r=8", "adapter_model.safetensors": "weights r=8"})


def test_a_kill_at_any_step_of_a_final_save_never_pairs_a_config_with_other_weights(tmp_path):
    new = {"adapter_config.json": "r=32", "adapter_model.safetensors": "weights r=32", "README.md": "new"}
    for point, nth in kill_points("files", tmp_path, _adapter_run_dir, new):
        root = tmp_path / f"{point}-{nth}"
        _adapter_run_dir(root)
        result = run_writer("files", root, new, point, nth)
        assert result.returncode == -9, (point, nth, result.stderr)
        now = tree(root / "target")
        assert now["checkpoint-4/adapter_model.safetensors"] == "ckpt" and now["notes.txt"] == "mine"
        pair = (now["adapter_config.json"], now.get("adapter_model.safetensors"))
        # old pair, new pair, or weights missing (a loud error on load); never a mix
        assert pair in {("r=8", "weights r=8"), ("r=32", "weights r=32"), ("r=8", None), ("r=32", None)}, pair
        assert run_writer("files", root, new).returncode == 0
        assert tree(root / "target")["adapter_model.safetensors"] == "weights r=32" and partials(root / "target") == []


def test_a_failing_writer_leaves_the_target_untouched_and_no_partial_folder(tmp_path):
    write_tree(tmp_path / "target", OLD)

    def fail(folder: Path) -> None:
        (folder / "half.txt").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        outputs.replace_directory(tmp_path / "target", fail)
    assert tree(tmp_path / "target") == OLD and partials(tmp_path) == []


def test_partial_folders_of_a_live_writer_are_kept_and_of_a_dead_one_removed(tmp_path):
    live = outputs.make_partial(tmp_path)  # ours: this process is alive
    dead = tmp_path / f"{outputs.PARTIAL_PREFIX}{outputs._HOST}-999999999-abcd"
    foreign = tmp_path / f"{outputs.PARTIAL_PREFIX}00000000-1-abcd"  # another host: its writer may be alive
    for folder in (dead, foreign):
        folder.mkdir()
    (tmp_path / ".dora-partial-notes").mkdir()  # not our name pattern: a user's folder
    outputs.remove_stale_partials(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, foreign.name, ".dora-partial-notes"])


@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    write_tree(tmp_path / "models" / "base", {"config.json": "{}"})
    write_tree(tmp_path / "models" / "adapter", {"adapter_config.json": "{}"})
    return {"base model": tmp_path / "models" / "base", "adapter": tmp_path / "models" / "adapter"}


@pytest.mark.parametrize(
    ("where", "relation"),
    [
        (lambda i: i["adapter"], "is the adapter"),
        (lambda i: i["base model"], "is the base model"),
        (lambda i: i["adapter"].parent, "contains the base model"),
        (lambda i: i["adapter"] / "merged", "lies inside the adapter"),
    ],
    ids=["adapter", "base", "parent-of-both", "inside-adapter"],
)
def test_an_output_that_is_holds_or_lies_in_an_input_is_refused_even_with_overwrite(inputs, where, relation):
    with pytest.raises(OutputError, match=relation):
        outputs.check_output(where(inputs), inputs, overwrite=True)


def test_a_non_empty_folder_needs_overwrite_and_a_file_is_refused(tmp_path):
    write_tree(tmp_path / "out", {"notes.txt": "mine"})
    with pytest.raises(OutputError, match="already exists and is not empty. Pass --overwrite"):
        outputs.check_output(tmp_path / "out")
    assert outputs.check_output(tmp_path / "out", overwrite=True) == (tmp_path / "out").resolve()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is an existing file, not a folder"):
        outputs.check_output(tmp_path / "file", overwrite=True)
    (tmp_path / "empty").mkdir()
    outputs.check_output(tmp_path / "empty")  # an empty folder is as good as a new one


def test_a_name_too_long_or_a_read_only_parent_fails_before_any_work(tmp_path):
    with pytest.raises(OutputError, match="has 300 bytes"):
        outputs.check_output(tmp_path / ("x" * 300) / "merged")
    long_name = tmp_path / ("x" * 250)  # fine: the partial folder's name does not grow with the target's
    outputs.replace_directory(outputs.check_output(long_name), lambda folder: (folder / "a.txt").write_text("new"))
    assert tree(long_name) == {"a.txt": "new"}
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "ro").mkdir(mode=0o555)
        with pytest.raises(OutputError, match="is not writable"):
            outputs.check_output(tmp_path / "ro" / "out")
