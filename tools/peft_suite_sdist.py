"""Fetch the sdist of a peft version from the package index and unpack its test suite, once per version."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from dora_plugins.errors import DoraError

# What the tests need from the sdist: the tests and the pytest configuration (markers, warning filters).
_MEMBERS = ("tests/", "pyproject.toml")


def fetch_sdist(version: str, cache: Path) -> Path:
    """``cache/peft-<version>.tar.gz``, downloaded with pip (the index pip is configured with) when missing."""
    archive = cache / f"peft-{version}.tar.gz"
    if archive.is_file():
        return archive
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
        # One exact sdist, without dependencies: an install's constraints file (CI's PIP_CONSTRAINT pins the
        # installed peft wheel) must not turn a missing version into a dependency conflict.
        env = {**os.environ, "PIP_CONSTRAINT": ""}
        done = subprocess.run([*command, "--dest", tmp, f"peft=={version}"], capture_output=True, text=True, env=env)
        found = sorted(Path(tmp).glob("peft-*.tar.gz"))
        if done.returncode != 0 or not found:
            raise DoraError(
                f"Could not download the sdist of peft=={version} (pip exit status {done.returncode}): "
                f"{done.stderr.strip()[-500:]}\nPut peft-{version}.tar.gz into {cache} or pass --cache-dir "
                "with a folder that holds it."
            )
        found[0].replace(archive)
    print(f"downloaded {archive}", flush=True)
    return archive


def unpack_tests(version: str, cache: Path) -> Path:
    """``cache/peft-<version>/`` with the sdist's ``tests/`` and ``pyproject.toml``, ready for pytest.

    The sdist leaves out ``tests/__init__.py``, which PEFT's test modules need for their relative imports
    (``from .testing_common import ...``), and ``tests/conftest.py``, which only skips PEFT's opt-in
    regression tests (none of which mention DoRA) and adapts a macOS failure.
    """
    suite = cache / f"peft-{version}"
    if (suite / "tests" / "__init__.py").is_file():  # written last: the folder is complete
        return suite
    if suite.exists():  # ours appear complete, in one rename: this folder is someone else's
        raise DoraError(f"{suite} exists but is not an unpacked peft suite of this script: move it away.")
    archive = fetch_sdist(version, cache)
    staging = Path(tempfile.mkdtemp(prefix=f"peft-{version}.", dir=cache))
    try:
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                _extract(tar, member, staging)
        if not (staging / "tests").is_dir():
            raise DoraError(f"{archive} has no tests/ folder: it is not a peft sdist. Delete it and run again.")
        (staging / "tests" / "__init__.py").touch()
        staging.rename(suite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"unpacked the tests of peft {version} into {suite}", flush=True)
    return suite


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path) -> None:
    """Write one regular file of ``peft-X/tests/`` or ``peft-X/pyproject.toml`` under ``root``; skip the rest."""
    parts = PurePosixPath(member.name).parts[1:]  # without the top folder peft-X/
    relative = "/".join(parts)
    if not member.isfile() or ".." in parts or not relative.startswith(_MEMBERS):
        return
    target = root.joinpath(*parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tar.extractfile(member) as source, open(target, "wb") as out:
        shutil.copyfileobj(source, out)
