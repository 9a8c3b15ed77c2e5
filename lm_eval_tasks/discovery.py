"""Startup hook that lets the stock ``lm_eval`` command find the ``dora_*`` tasks.

lm-eval 0.4.13 indexes its own task folder and ``--include_path`` only. The wheel (and an
editable install) puts ``dora_plugins_lm_eval.pth`` at the top of site-packages; its one import
line (or, on Pythons that implement PEP 829, the matching ``.start`` entry point) calls
:func:`install` at interpreter start-up. That only puts a tiny finder on ``sys.meta_path``: nothing
else runs until ``lm_eval.tasks`` is imported. Right after that module has executed,
``TaskManager.__init__`` is wrapped so that this folder is indexed after lm-eval's own tasks and
*before* any ``include_path`` the user passes; lm-eval lets later paths override earlier ones, so
a user's own copy of a ``dora_*`` task still wins. Every failure becomes a warning: lm-eval keeps
working, without our tasks, and the warning says how to pass the folder by hand.

This module must stay cheap to import (the standard library's ``os`` and ``sys`` only, both
already loaded at start-up); the rest is imported when ``lm_eval.tasks`` is.
"""

import os
import sys

TASK_DIR = os.path.dirname(os.path.abspath(__file__))
_TARGET = "lm_eval.tasks"
_PATCHED = "__dora_plugins_task_dir__"  # attribute set on the wrapped TaskManager.__init__


class _LmEvalTasksFinder:
    """Meta-path finder that answers nothing, but patches ``lm_eval.tasks`` once it has executed."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _TARGET:
            return None
        try:
            spec = _find_real_spec(self, fullname, path, target)
            if spec is not None and hasattr(spec.loader, "exec_module"):
                _patch_after_exec(spec.loader)
            return spec
        except Exception as exc:  # never break lm_eval's import
            _warn(exc)
            return None


def _find_real_spec(finder, fullname, path, target):
    """The spec the rest of ``sys.meta_path`` finds for ``fullname``, as if we were not there."""
    for other in list(sys.meta_path):
        find_spec = getattr(other, "find_spec", None)
        if other is finder or find_spec is None:
            continue
        spec = find_spec(fullname, path, target)
        if spec is not None:
            return spec
    return None


def _patch_after_exec(loader) -> None:
    run = loader.exec_module

    def exec_module(module):
        run(module)
        _patch_module(module)

    loader.exec_module = exec_module


def _patch_module(module) -> None:
    try:
        add_task_dir(module.TaskManager)
    except Exception as exc:  # lm-eval changed shape: warn, keep lm-eval working
        _warn(exc)
    else:
        _uninstall_finder()


def with_task_dir(include_path):
    """``include_path`` as a list with our task folder first, so that the user's paths override ours."""
    if include_path is None:
        paths = []
    elif isinstance(include_path, (list, tuple)):
        paths = list(include_path)
    else:
        paths = [include_path]
    if any(os.path.realpath(os.fspath(p)) == os.path.realpath(TASK_DIR) for p in paths):
        return paths
    return [TASK_DIR, *paths]


def add_task_dir(task_manager_cls) -> None:
    """Wrap ``task_manager_cls.__init__`` so that every TaskManager also indexes :data:`TASK_DIR`."""
    import functools
    import inspect

    init = task_manager_cls.__init__
    if getattr(init, _PATCHED, None):
        return
    signature = inspect.signature(init)
    if "include_path" not in signature.parameters:
        raise TypeError(f"{task_manager_cls.__qualname__}.__init__ has no 'include_path' parameter")

    @functools.wraps(init)
    def __init__(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.arguments["include_path"] = with_task_dir(bound.arguments.get("include_path"))
        init(*bound.args, **bound.kwargs)

    setattr(__init__, _PATCHED, TASK_DIR)
    task_manager_cls.__init__ = __init__


def _uninstall_finder() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _LmEvalTasksFinder)]


def _warn(exc: BaseException) -> None:
    import warnings

    warnings.warn(
        f"dora-plugins could not add its tasks (dora_commonsense, dora_*) to lm-eval: {type(exc).__name__}: {exc}. "
        f"lm-eval works without them; to use them, pass --include_path {TASK_DIR}",
        RuntimeWarning,
        stacklevel=2,
    )


def install() -> None:
    """Start-up entry point (``.pth`` line and PEP 829 ``.start`` file): arm the finder, once."""
    try:
        module = sys.modules.get(_TARGET)
        if module is not None and hasattr(module, "TaskManager"):
            _patch_module(module)  # lm_eval.tasks is already loaded: patch it now
        elif not any(isinstance(f, _LmEvalTasksFinder) for f in sys.meta_path):
            sys.meta_path.insert(0, _LmEvalTasksFinder())
    except Exception as exc:
        _warn(exc)
