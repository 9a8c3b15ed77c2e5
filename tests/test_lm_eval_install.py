"""A fresh venv: `pip install .` and `pip install -e .` install the startup hook, lm_eval lists our tasks,
`pip uninstall` removes the hook, and a moved editable checkout leaves Python silent.

The venv is created without pip and without the system site-packages; a path line adds the system
site-packages (torch, lm_eval, pip, setuptools) at the END of sys.path. A path line does not run the
``.pth`` files of that folder, so the system's own editable install of this project stays inactive:
whatever works here works because of what was installed into the venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest
from helpers import REPO

from dora_plugins.benchmarks import BENCHMARKS

pytestmark = pytest.mark.slow  # each test builds a venv and installs the project into it

SOURCES = ("pyproject.toml", "setup.py", "README.md", "dora_plugins", "lm_eval_tasks", "trl_integration")
HOOK_FILES = {  # the lm-eval hook and the routing hook, each a .pth and a PEP 829 .start file
    name: (REPO / package / name).read_text()
    for package, stem in (("lm_eval_tasks", "dora_plugins_lm_eval"), ("dora_plugins", "dora_plugins_route"))
    for name in (f"{stem}.pth", f"{stem}.start")
}
NAMES = ["dora_commonsense", "dora_commonsense_mc", "dora_commonsense_text", *(b.task for b in BENCHMARKS),
         *(b.mc_task for b in BENCHMARKS), *(b.text_task for b in BENCHMARKS)]  # fmt: skip
# Without PYTHONPATH: the venv must see only what was installed into it.
ENV = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
ENV.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project sources, so that building leaves nothing in the working tree."""
    copy = tmp_path_factory.mktemp("project")
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, copy / name)
    return copy


def make_venv(path: Path) -> tuple[Path, Path]:
    venv.create(path, with_pip=False)
    python = path / "bin" / "python"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    (site / "_system_site_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python, site


def run(cmd: list, cwd: Path | None = None) -> str:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def pip(python: Path, *args) -> str:
    return run([python, "-m", "pip", *args, "-q"])


def assert_hook_files(site: Path, present: bool) -> None:
    for name, content in HOOK_FILES.items():
        if present:
            assert (site / name).read_text() == content
        else:
            assert not (site / name).exists(), f"{name} left behind in {site}"


def test_wheel_install_lists_the_tasks_and_uninstall_removes_the_hook(project, tmp_path):
    python, site = make_venv(tmp_path / "venv")
    pip(python, "install", "--no-deps", "--no-build-isolation", "--no-index", "--ignore-installed", project)
    assert_hook_files(site, present=True)
    located = run([python, "-c", "import lm_eval_tasks; print(lm_eval_tasks.__file__)"])
    assert located.startswith(str(site)), located
    listing = run([python, "-m", "lm_eval", "ls", "tasks"], cwd=tmp_path)  # the stock command, all of lm-eval
    for name in NAMES:
        (row,) = [line for line in listing.splitlines() if line.startswith(f"|{name} ")]
        assert str(site / "lm_eval_tasks") in row, row
    pip(python, "uninstall", "-y", "dora-plugins")
    assert_hook_files(site, present=False)
    assert not (site / "lm_eval_tasks").exists()


def test_editable_install_finds_the_tasks_in_the_source_tree(project, tmp_path):
    python, site = make_venv(tmp_path / "venv")
    pip(python, "install", "--no-deps", "--no-build-isolation", "--no-index", "--ignore-installed", "-e", project)
    assert_hook_files(site, present=True)
    code = (
        "import lm_eval_tasks; from lm_eval.tasks import TaskManager; tm = TaskManager(include_defaults=False); "
        "print(lm_eval_tasks.__file__); print(sorted(tm.all_groups + tm.all_subtasks))"
    )
    located, names = run([python, "-c", code], cwd=tmp_path).splitlines()[-2:]
    assert located == str(project / "lm_eval_tasks" / "__init__.py")
    assert names == str(sorted(NAMES))
    pip(python, "uninstall", "-y", "dora-plugins")
    assert_hook_files(site, present=False)


def test_moved_editable_checkout_leaves_every_python_start_silent(project, tmp_path):
    python, site = make_venv(tmp_path / "venv")
    pip(python, "install", "--no-deps", "--no-build-isolation", "--no-index", "--ignore-installed", "-e", project)
    moved = project.rename(project.with_name("moved"))
    try:
        started = subprocess.run([python, "-c", "pass"], capture_output=True, text=True, env=ENV, cwd=tmp_path)
        assert (started.returncode, started.stdout, started.stderr) == (0, "", "")  # the hook's .pth is still there
        assert (site / "dora_plugins_lm_eval.pth").is_file()
        code = "from lm_eval.tasks import TaskManager; print(TaskManager(include_defaults=False).all_groups)"
        assert run([python, "-c", code], cwd=tmp_path).strip() == "[]"  # lm-eval runs, without our tasks
    finally:
        moved.rename(project)
