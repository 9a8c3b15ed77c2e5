"""The startup hook: lazy until lm_eval.tasks is imported, adds our folder, user paths win, failures warn."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap
import types

import pytest
from lm_eval.tasks import TaskManager

from lm_eval_tasks import discovery, startup

NOT_INSTALLED = "the startup hook is not installed in this environment; run `pip install -e .`"


def run_python(code: str, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [sys.executable, *flags, "-c", textwrap.dedent(code)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def test_hook_does_nothing_until_lm_eval_is_imported_then_patches_it():
    result = run_python("""
        import sys
        from lm_eval_tasks import startup
        armed = [type(f).__name__ for f in sys.meta_path if isinstance(f, startup.LmEvalTasksFinder)]
        loaded = [m for m in ("lm_eval", "lm_eval_tasks.discovery", "peft", "torch") if m in sys.modules]
        print("at start:", armed, loaded)
        from lm_eval.tasks import TaskManager
        print("tasks:", TaskManager.__init__.__dora_plugins_task_dir__)
        from lm_eval.models.utils_hf import MultiTokenEOSCriteria
        left = [f for f in sys.meta_path if isinstance(f, startup.LmEvalTasksFinder)]
        print("after:", len(left), MultiTokenEOSCriteria.__call__.__dora_plugins_per_candidate__)
        tm = TaskManager(include_defaults=False)
        print("groups:", sorted(tm.all_groups), len(tm.all_subtasks))
    """)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "at start: ['LmEvalTasksFinder'] []", NOT_INSTALLED  # armed, nothing heavy imported
    assert lines[1] == f"tasks: {discovery.TASK_DIR}"  # TaskManager indexes our folder
    assert lines[2] == "after: 0 True"  # the stop check is patched, and the finder is gone
    assert lines[3] == "groups: ['dora_commonsense', 'dora_commonsense_mc', 'dora_commonsense_text'] 24"


def test_include_path_gets_our_folder_first_so_that_user_paths_override():
    here = discovery.TASK_DIR
    assert discovery.with_task_dir(None) == [here]
    assert discovery.with_task_dir("/mine") == [here, "/mine"]
    assert discovery.with_task_dir(["/a", "/b"]) == [here, "/a", "/b"]
    assert discovery.with_task_dir(("/a",)) == [here, "/a"]
    assert discovery.with_task_dir(["/a", here + "/"]) == ["/a", here + "/"]  # the user placed ours: keep it


def test_users_own_task_of_the_same_name_wins(tmp_path):
    (tmp_path / "my_boolq.yaml").write_text("task: dora_boolq\ndataset_path: my/boolq\noutput_type: generate_until\n")
    for manager in (
        TaskManager(include_defaults=False, include_path=str(tmp_path)),
        TaskManager(None, str(tmp_path), False),  # include_path passed by position
    ):
        index = manager.task_index
        assert str(index["dora_boolq"].yaml_path) == str(tmp_path / "my_boolq.yaml")
        assert os.path.dirname(index["dora_piqa"].yaml_path) == discovery.TASK_DIR
        assert manager.include_path == [discovery.TASK_DIR, str(tmp_path)]


def test_patching_twice_is_harmless():
    init = TaskManager.__init__
    assert getattr(init, "__dora_plugins_task_dir__", None) == discovery.TASK_DIR, NOT_INSTALLED
    discovery.add_task_dir(TaskManager)
    startup.install()  # lm_eval.tasks is loaded: install() patches at once, and again is a no-op
    assert TaskManager.__init__ is init


def test_a_failure_warns_with_the_fix_and_lm_eval_keeps_working():
    with pytest.warns(RuntimeWarning, match=r"could not add its tasks.*--include_path .*lm_eval_tasks"):
        startup.on_loaded("lm_eval.tasks", types.SimpleNamespace())  # an lm_eval.tasks without TaskManager
    with pytest.warns(RuntimeWarning, match=r"could not fix lm-eval's stop check under beam search.*cut answers"):
        startup.on_loaded("lm_eval.models.utils_hf", types.SimpleNamespace())
    with pytest.raises(TypeError, match="no 'include_path' parameter"):
        discovery.add_task_dir(type("OtherManager", (), {"__init__": lambda self, paths=None: None}))
    result = run_python("""
        import warnings
        from lm_eval_tasks import discovery
        def broken(cls):
            raise RuntimeError("simulated change in lm-eval")
        discovery.add_task_dir = broken
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from lm_eval.tasks import TaskManager
        print([str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)])
        print(TaskManager(include_defaults=False).all_groups)
    """)
    assert result.returncode == 0, result.stderr
    warned, groups = result.stdout.splitlines()[-2:]
    assert "simulated change in lm-eval" in warned and "--include_path" in warned
    assert groups == "[]"  # lm-eval works, only without our tasks


def imported_at_start(*flags: str) -> dict[str, list[str]]:
    """``-X importtime`` of an empty program: the hook module, and what it imported (indented under it)."""
    lines = run_python("pass", "-X", "importtime", *flags).stderr.splitlines()
    rows = [re.fullmatch(r"import time:\s+\d+ \|\s+\d+ \|( *)(\S+)", line) for line in lines]
    names = [(len(m.group(1)), m.group(2)) for m in rows if m]
    imports: dict[str, list[str]] = {}
    for i, (depth, name) in enumerate(names):  # a module's own imports are listed above it, deeper
        below = []
        for other_depth, other in reversed(names[:i]):
            if other_depth <= depth:
                break
            below.append(other)
        imports[name] = below
    return imports


def test_the_hook_imports_nothing_at_start_but_itself_and_prints_nothing():
    # Its cost lives in perf/startup_cost.py; here: both hooks import their packages and the stdlib-only
    # finder base, and nothing heavy loads.
    imports = imported_at_start()
    assert "lm_eval_tasks.startup" in imports and "dora_plugins.startup" in imports, NOT_INSTALLED
    ours = {"lm_eval_tasks", "dora_plugins", "dora_plugins.import_hooks"}
    assert set(imports["lm_eval_tasks.startup"]) <= ours and set(imports["dora_plugins.startup"]) <= ours
    assert not any(name.split(".")[0] in ("lm_eval", "torch", "peft", "transformers") for name in imports)
    quiet = run_python("pass")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


def test_entry_point_group_lm_eval_tasks_names_this_folder():
    entry_points = importlib.metadata.entry_points(group="lm_eval.tasks")
    (entry_point,) = [ep for ep in entry_points if ep.name == "dora_commonsense"]
    module = entry_point.load()
    assert os.path.dirname(module.__file__) == discovery.TASK_DIR
