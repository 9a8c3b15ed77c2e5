"""Start-up entry of the lm-eval hook: the ``.pth`` line and the PEP 829 ``.start`` file call :func:`install`.

It runs in every Python process of the environment, so it stays tiny and imports nothing but ``sys``
(already loaded). It puts a finder on ``sys.meta_path`` that answers no import; when ``lm_eval.tasks``
has executed, it hands ``TaskManager`` to :mod:`lm_eval_tasks.discovery` and removes itself. Errors
become a warning, never an exception: lm-eval must keep working without our tasks.
"""

import sys

_TARGET = "lm_eval.tasks"


class LmEvalTasksFinder:
    """Meta-path finder that finds nothing, but has ``lm_eval.tasks`` patched right after it executes."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _TARGET:
            return None
        try:
            spec = _find_real_spec(self, fullname, path, target)
            if spec is not None and hasattr(spec.loader, "exec_module"):
                _call_after_exec(spec.loader, on_loaded)
            return spec
        except Exception as exc:  # never break lm_eval's import
            warn(exc)
            return None


def _find_real_spec(finder, fullname, path, target):
    """The spec that the rest of ``sys.meta_path`` finds for ``fullname``, as if we were not there."""
    for other in list(sys.meta_path):
        find_spec = getattr(other, "find_spec", None)
        if other is finder or find_spec is None:
            continue
        spec = find_spec(fullname, path, target)
        if spec is not None:
            return spec
    return None


def _call_after_exec(loader, callback) -> None:
    run = loader.exec_module

    def exec_module(module):
        run(module)
        callback(module)

    loader.exec_module = exec_module


def on_loaded(module) -> None:
    """``lm_eval.tasks`` has executed: make its TaskManager index our folder, then stop watching imports."""
    try:
        from .discovery import add_task_dir

        add_task_dir(module.TaskManager)
    except Exception as exc:  # lm-eval changed shape: warn, keep lm-eval working
        warn(exc)
    else:
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, LmEvalTasksFinder)]


def warn(exc: BaseException) -> None:
    import os
    import warnings

    warnings.warn(
        f"dora-plugins could not add its tasks (dora_commonsense, dora_*) to lm-eval: {type(exc).__name__}: {exc}. "
        f"lm-eval works without them; to use them, pass --include_path {os.path.dirname(os.path.abspath(__file__))}",
        RuntimeWarning,
        stacklevel=2,
    )


def install() -> None:
    """Arm the finder, once; if ``lm_eval.tasks`` is already loaded, patch it now."""
    try:
        module = sys.modules.get(_TARGET)
        if module is not None and hasattr(module, "TaskManager"):
            on_loaded(module)
        elif not any(isinstance(f, LmEvalTasksFinder) for f in sys.meta_path):
            sys.meta_path.insert(0, LmEvalTasksFinder())
    except Exception as exc:
        warn(exc)
