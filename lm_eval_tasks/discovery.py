"""Make every lm-eval ``TaskManager`` index this folder, so that the stock ``lm_eval`` finds our tasks.

lm-eval 0.4.13 indexes its own task folder and ``--include_path`` only. :mod:`lm_eval_tasks.startup`
(run at interpreter start-up by the installed ``.pth``/``.start`` files) calls :func:`add_task_dir`
as soon as ``lm_eval.tasks`` has been imported. Our folder goes after lm-eval's own tasks and
*before* any ``include_path`` the user passes; lm-eval lets later paths override earlier ones, so a
user's own task of the same name still wins.
"""

from __future__ import annotations

import functools
import inspect
import os

TASK_DIR = os.path.dirname(os.path.abspath(__file__))
_PATCHED = "__dora_plugins_task_dir__"  # marks the wrapped TaskManager.__init__


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
    """Wrap ``task_manager_cls.__init__`` so that every TaskManager also indexes :data:`TASK_DIR`; idempotent."""
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
