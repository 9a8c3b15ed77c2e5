"""The import rule of ARCHITECTURE.md, read from the source: the core imports no integration, the integrations
import only the core, and only the ``dora`` command line imports everything.

Every import counts, at module level or inside a function, and so does ``importlib.import_module("name")``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers import REPO

CLI = ("dora_plugins.cli", "dora_plugins.__main__")  # the top: the `dora` command and `python -m dora_plugins`
# package -> the packages of ours it must never import
FORBIDDEN = {
    "dora_plugins": ("trl_integration", "lm_eval_tasks", *CLI),
    "trl_integration": ("lm_eval_tasks", *CLI),
    "lm_eval_tasks": ("trl_integration", *CLI),
}


def module_name(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, root: Path = REPO) -> set[str]:
    """The absolute names of every module (and imported name) that ``path``, under ``root``, imports."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    return names


def sources(package: str) -> list[Path]:
    files = [path for path in sorted((REPO / package).rglob("*.py")) if not module_name(path).startswith(CLI)]
    assert files, f"no Python file under {REPO / package}"
    return files


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_the_architecture_allows(package):
    breaches = [
        f"{module_name(path)} imports {name}"
        for path in sources(package)
        for name in sorted(imported(path))
        if any(name == banned or name.startswith(banned + ".") for banned in FORBIDDEN[package])
    ]
    assert not breaches, "layers are broken (see ARCHITECTURE.md):\n" + "\n".join(breaches)


def test_the_rule_sees_function_level_relative_and_dynamic_imports(tmp_path):
    """The walker itself: a breach hidden in a function, a relative import or import_module is found."""
    package = tmp_path / "dora_plugins"
    package.mkdir()
    (package / "bad.py").write_text(
        "import importlib\n"
        "def f():\n"
        "    from .cli import main\n"
        "    import trl_integration.cli\n"
        "    return importlib.import_module('lm_eval_tasks.utils')\n"
    )
    found = imported(package / "bad.py", root=tmp_path)
    assert {"dora_plugins.cli.main", "trl_integration.cli", "lm_eval_tasks.utils"} <= found


def test_tests_share_code_only_through_helpers():
    """Tests import shared code from ``tests/helpers.py``, never from another test module or a conftest."""
    breaches = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in sorted((REPO / "tests").rglob("*.py"))
        for name in sorted(imported(path, root=path.parent))
        if name.split(".")[0].startswith(("test_", "conftest", "trl_tests"))
    ]
    assert not breaches, "\n".join(breaches)
