"""The example plugin package under examples/ installs and registers; a broken plugin is named and skipped."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "dora-plugin-example"

CHECK = textwrap.dedent(
    """
    import json
    from dora_plugins import adapter_config
    from dora_plugins.extract import extract_answer
    config = adapter_config("dora_attention", r=4)
    print(json.dumps({
        "type": type(config).__name__,
        "r": config.r,
        "lora_alpha": config.lora_alpha,
        "targets": sorted(config.target_modules),
        "use_dora": config.use_dora,
        "last": extract_answer("answer1? No: the correct answer is Answer3", "ARC-Easy", method="last_label"),
        "longer_token": extract_answer("answer12", "ARC-Easy", method="last_label"),
    }))
    """
)


@pytest.fixture(scope="module")
def example_venv(tmp_path_factory):
    """A venv that sees this interpreter's packages (dora-plugins included) with the example plugin pip-installed."""
    root = tmp_path_factory.mktemp("example-plugin")
    source = root / "dora-plugin-example"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))  # builds stay out of git
    python = _venv_over_this_environment(root / "venv")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", str(source)],
        check=True,
        env=_env(),
    )
    return python


def _venv_over_this_environment(path: Path) -> str:
    """A venv whose ``sys.path`` ends with the site folders of the interpreter running the tests.

    ``system_site_packages=True`` would give the *base* interpreter's packages, not those of the user's venv
    (where dora-plugins, pip and a PEP 639 setuptools are installed). A ``.pth`` line calling
    ``site.addsitedir`` also runs the ``.pth`` files there, which the editable install of dora-plugins needs.
    """
    venv.EnvBuilder(with_pip=False).create(path)
    python = path / "bin" / "python"
    site_dirs = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    own = subprocess.run(
        [str(python), "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True, check=True
    ).stdout.strip()
    lines = [f"import site; site.addsitedir({d!r})" for d in site_dirs if Path(d).is_dir()]
    (Path(own) / "_tests_parent_environment.pth").write_text("\n".join(lines) + "\n")
    return str(python)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "DORA_PLUGINS_LOAD"}
    return env | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}


def _run(python: str, *args: str, env: dict | None = None) -> str:
    cwd = Path(python).parents[2]  # the temp dir, so that nothing is imported from the current directory
    result = subprocess.run([python, *args], capture_output=True, text=True, env=env or _env(), cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_example_plugin_is_listed_by_dora_plugins_with_its_name(example_venv):
    listing = json.loads(_run(example_venv, "-m", "dora_plugins", "plugins", "--json"))
    presets = {item["name"]: item["plugin"] for item in listing["adapter presets"]}
    extractors = {item["name"]: item["plugin"] for item in listing["answer extractors"]}
    assert presets["dora_attention"] == "example"
    assert extractors["last_label"] == "example"
    assert presets["dora"] == "dora_plugins.builtin" and extractors["improved"] == "dora_plugins.builtin"
    table = _run(example_venv, "-m", "dora_plugins", "plugins")
    assert any(line.split()[:2] == ["dora_attention", "example"] for line in table.splitlines())
    assert listing["failed plugins"] == {}


def test_example_preset_and_extractor_work_through_the_public_api(example_venv):
    result = json.loads(_run(example_venv, "-c", CHECK))
    assert result == {
        "type": "DoraConfig",
        "r": 4,  # the override wins over the preset's r=8
        "lora_alpha": 16,
        "targets": ["k_proj", "o_proj", "q_proj", "v_proj"],
        "use_dora": True,
        "last": "answer3",
        "longer_token": "",
    }


def test_dora_plugins_load_can_exclude_the_example(example_venv):
    env = _env() | {"DORA_PLUGINS_LOAD": ""}
    listing = json.loads(_run(example_venv, "-m", "dora_plugins", "plugins", "--json", env=env))
    assert "dora_attention" not in {item["name"] for item in listing["adapter presets"]}
    assert "dora" in {item["name"] for item in listing["adapter presets"]}


def test_system_python_does_not_see_the_example(example_venv):
    """Installing into the venv left the project's own environment untouched."""
    listing = json.loads(_run(sys.executable, "-m", "dora_plugins", "plugins", "--json"))
    assert "dora_attention" not in {item["name"] for item in listing["adapter presets"]}
