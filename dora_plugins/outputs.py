"""Writers that never destroy what they did not create: the one home of output checks and atomic writes.

Every command that writes a folder (``dora merge``, ``dora sft --merged_output_dir``, ``dora demo --output``)
calls :func:`check_output` before it loads anything:

- an output may not be, contain or lie inside one of the run's inputs (base model, adapter, dataset, ...);
- an existing output must be a folder, and an empty one unless the user asked to overwrite it.

:func:`replace_directory` then builds the new folder beside the target (``.dora-partial-*``) and swaps it in
with one atomic rename (``renameat2(RENAME_EXCHANGE)`` on Linux, ``renamex_np(RENAME_SWAP)`` on macOS): at
every instant the target holds the complete old folder or the complete new one (or, for a new path, nothing).
The old contents are removed only after the swap. :func:`replace_files` does the same for files that join a
folder holding other things (a training run's final adapter beside its checkpoints). Partial folders that a
killed process left behind are removed by the next writer in the same parent folder.

A training run writes into its folder for hours (checkpoints, then the adapter), so it cannot be swapped in
whole: :func:`check_run_output` lets it start only in a new or empty folder, in a folder of an earlier run
that it resumes, or where the user passed ``--overwrite``; :func:`start_run_folder` leaves a marker
(``.dora-run.json``) before the first write, and on ``--overwrite`` deletes only what an earlier run wrote
(its ``checkpoint-N`` folders and the files its marker lists), never the user's other files.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from .errors import OutputError

T = TypeVar("T")

PARTIAL_PREFIX = ".dora-partial-"
# .dora-partial-<host hash>-<pid>-<random>[-old|-target]: the host and pid tell whether its writer may still run.
_PARTIAL = re.compile(r"\.dora-partial-([0-9a-f]{8})-(\d+)-[0-9a-f]+(-old|-target)?")
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
RUN_MARKER = ".dora-run.json"  # {"command": ..., "files": [...]}: this folder holds a training run
_CHECKPOINT = re.compile(r"checkpoint-\d+")
STAGING = ".partial"  # where a run stages a checkpoint before renaming it into place


def check_output(
    output: str | os.PathLike,
    inputs: Mapping[str, str | os.PathLike | None] = {},  # noqa: B006 - read only
    overwrite: bool = False,
    option: str = "--output",
    overwrite_flag: str = "--overwrite",
) -> Path:
    """The resolved ``output`` path, or an :class:`OutputError` if writing there could destroy something.

    ``inputs`` maps a label ("base model", "adapter", ...) to a path, compared whether or not it exists yet (a
    hub id is compared as the relative path it spells). ``option`` and ``overwrite_flag`` name the command-line
    options in the messages.
    """
    path = Path(output).expanduser().resolve()
    if _exists(path) and not path.is_dir():
        raise OutputError(f"{option} {output} is an existing file, not a folder. Choose a folder path.")
    _check_creatable(path, option)
    for label, source in inputs.items():
        if not source:
            continue
        local = Path(source).expanduser().resolve()
        relation = (
            "is" if path == local else "contains" if path in local.parents else "lies inside" if local in path.parents
            else None
        )  # fmt: skip
        if relation:
            raise OutputError(
                f"{option} {output} {relation} the {label} ({source}): writing there could destroy it. "
                "Choose a folder outside every input."
            )
    if path.exists() and not overwrite and any(path.iterdir()):
        raise OutputError(
            f"{option} {output} already exists and is not empty. Pass {overwrite_flag} to replace it (the "
            "old contents stay until the new output is complete), or choose a new folder."
        )
    return path


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long for the file system, say: nothing can be there
        return False


def _check_creatable(path: Path, option: str) -> None:
    """Fail now, not after hours of work, when ``path`` cannot be created: a name too long, a read-only folder."""
    existing = next(p for p in (path, *path.parents) if _exists(p))
    if not existing.is_dir():
        raise OutputError(f"{option} {path}: {existing} is a file, so no folder can be created under it.")
    name_max = os.pathconf(existing, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    too_long = [part for part in path.relative_to(existing).parts if len(os.fsencode(part)) > name_max]
    if too_long:
        raise OutputError(
            f"{option} {path}: the name '{too_long[0][:40]}...' has {len(os.fsencode(too_long[0]))} bytes; this file "
            f"system allows {name_max}. Choose a shorter name."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: folder {existing} is not writable. Choose a folder you can write to.")


def replace_directory(target: str | os.PathLike, write: Callable[[Path], T]) -> T:
    """Run ``write(folder)`` on a new folder beside ``target``, then swap it in atomically (see the module docs).

    Returns what ``write`` returned. If ``write`` fails, ``target`` is untouched and the new folder is removed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target.parent)
    new = make_partial(target.parent)
    try:
        written = write(new)
        swap_in(new, target)
        return written
    finally:
        shutil.rmtree(new, ignore_errors=True)  # after a swap this holds the old contents


def replace_files(directory: str | os.PathLike, write: Callable[[Path], None]) -> list[str]:
    """Run ``write(folder)`` on a new folder, then move what it wrote into ``directory``, weight files last.

    A folder that also holds other things (a run's ``output_dir`` with its checkpoints) cannot be swapped as a
    whole, so entries go in one by one, each with an atomic rename. The weight files about to be replaced are
    removed first, so a crash between two renames leaves an adapter without weights, which fails loudly on
    load, and never a new config beside old weights of another shape. Returns the names moved in.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(directory)
    new = make_partial(directory)
    try:
        write(new)
        names = sorted((entry.name for entry in new.iterdir()), key=lambda name: name.endswith(WEIGHT_SUFFIXES))
        for name in names:
            if name.endswith(WEIGHT_SUFFIXES) and (directory / name).is_file():
                os.unlink(directory / name)
        for name in names:
            if (new / name).is_dir():
                swap_in(new / name, directory / name)
                shutil.rmtree(new / name, ignore_errors=True)
            else:
                os.replace(new / name, directory / name)
        return names
    finally:
        shutil.rmtree(new, ignore_errors=True)


def check_run_output(
    output: str | os.PathLike,
    inputs: Mapping[str, str | os.PathLike | None],
    *,
    overwrite: bool,
    resume: bool,
    command: str,
    option: str = "--output_dir",
) -> Path:
    """The resolved folder of a training run, or an :class:`OutputError` before anything loads.

    The folder may be new or empty; one that holds anything needs ``resume`` (the user continues the run
    there) or ``overwrite`` (the user starts a new one there; see :func:`start_run_folder`).
    """
    path = check_output(output, inputs, overwrite=True, option=option)  # where it lies; not yet what it holds
    if resume and overwrite:
        raise OutputError(
            f"--resume_from_checkpoint continues the run in {option} {output} and --overwrite starts a new one "
            "there: pass only one of them."
        )
    held = sorted(entry.name for entry in path.iterdir()) if path.is_dir() else []
    if not held or resume or overwrite:
        return path
    listing = ", ".join(held[:4]) + (f" and {len(held) - 4} more" if len(held) > 4 else "")
    if is_run_folder(path):
        raise OutputError(
            f"{option} {output} holds an earlier training run ({listing}). Pass --resume_from_checkpoint true to "
            "continue it, --overwrite to start a new run there (the earlier run's checkpoints and adapter files "
            "are deleted when training starts; other files stay), or choose a new folder."
        )
    raise OutputError(
        f"{option} {output} holds files that '{command}' did not write ({listing}). Choose a new or empty folder, "
        "or pass --overwrite to train into it anyway (files named as a run's outputs are replaced; others stay)."
    )


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` holds a training run: our marker, or a ``checkpoint-N`` folder that a Trainer wrote."""
    return (path / RUN_MARKER).is_file() or bool(_checkpoints(path))


def _checkpoints(path: Path) -> list[Path]:
    return [
        entry for entry in path.iterdir()
        if _CHECKPOINT.fullmatch(entry.name) and (entry / "trainer_state.json").is_file()
    ]  # fmt: skip


def start_run_folder(path: str | os.PathLike, command: str, overwrite: bool) -> None:
    """Mark ``path`` as a run of ``command`` before its first write; with ``overwrite``, first delete what an
    earlier run wrote there (its ``checkpoint-N`` folders, its staging folder, the files its marker lists)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for entry in [*_checkpoints(path), path / STAGING]:
            shutil.rmtree(entry, ignore_errors=True)
        for name in _marker(path).get("files", []):
            if (path / name).is_file() and Path(name).name == name:  # a plain name inside path, never a path
                (path / name).unlink()
    if overwrite or not (path / RUN_MARKER).is_file():
        _write_marker(path, {"command": command, "files": []})


def record_run_files(path: str | os.PathLike, names: list[str]) -> None:
    """Add ``names`` to the files the marker of run folder ``path`` says the run wrote (no marker: nothing)."""
    path = Path(path)
    if (path / RUN_MARKER).is_file():
        marker = _marker(path)
        marker["files"] = sorted(set(marker.get("files", [])) | set(names))
        _write_marker(path, marker)


def _marker(path: Path) -> dict:
    try:
        marker = json.loads((path / RUN_MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}


def _write_marker(path: Path, marker: dict) -> None:
    temporary = path / f"{RUN_MARKER}.{os.getpid()}"
    temporary.write_text(json.dumps(marker, indent=1) + "\n")
    os.replace(temporary, path / RUN_MARKER)


def swap_in(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put folder ``new`` at ``target`` in one atomic step; a non-empty ``target`` ends up at ``new``."""
    try:
        os.rename(new, target)  # target absent, or an empty folder that rename replaces
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    if not _exchange(os.fsencode(new), os.fsencode(target)):
        _exchange_in_two_steps(Path(new), Path(target))


def _exchange(a: bytes, b: bytes) -> bool:
    """Swap two paths atomically; False where the system or file system cannot."""
    libc = ctypes.CDLL(None, use_errno=True)
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        at_fdcwd, rename_exchange = -100, 2
        status = libc.renameat2(at_fdcwd, a, at_fdcwd, b, rename_exchange)
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        rename_swap = 2
        status = libc.renamex_np(a, b, rename_swap)
    else:
        return False
    if status == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # e.g. some network file systems
        return False
    raise OSError(code, os.strerror(code), os.fsdecode(b))


def _exchange_in_two_steps(new: Path, target: Path) -> None:
    """The fallback swap: between the two renames ``target`` is absent and its old contents wait at ``*-old``.

    The ``*-target`` note names the target, so that the next writer can put the old contents back if this
    process dies in that moment (:func:`remove_stale_partials`).
    """
    old, note = new.with_name(new.name + "-old"), new.with_name(new.name + "-target")
    note.write_text(str(target.resolve()))
    os.rename(target, old)
    os.rename(new, target)
    os.rename(old, new)
    note.unlink()


def make_partial(parent: Path) -> Path:
    """A new, empty partial folder in ``parent``, with ordinary permissions (``mkdtemp`` makes it private)."""
    path = parent / f"{PARTIAL_PREFIX}{_HOST}-{os.getpid()}-{secrets.token_hex(4)}"
    path.mkdir()
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)
    return path


def remove_stale_partials(parent: Path) -> None:
    """Clean up after writers in ``parent`` that died (this host, their pid gone).

    Partial folders are removed. An interrupted two-step swap is finished: the old contents go back to the
    target if it is missing, and are removed if the new folder made it there.
    """
    stale = [entry for entry in parent.iterdir() if _stale(entry)]
    for note in [entry for entry in stale if entry.name.endswith("-target")]:
        old, target = note.with_name(note.name.removesuffix("-target") + "-old"), Path(note.read_text())
        if old.exists() and not target.exists():
            os.rename(old, target)
        shutil.rmtree(old, ignore_errors=True)
        note.unlink()
    for entry in stale:
        if entry.exists() and not entry.name.endswith("-target"):
            shutil.rmtree(entry, ignore_errors=True)


def _stale(entry: Path) -> bool:
    match = _PARTIAL.fullmatch(entry.name)
    return match is not None and match.group(1) == _HOST and not _alive(int(match.group(2)))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
