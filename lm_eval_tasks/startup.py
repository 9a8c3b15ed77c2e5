"""Start-up entry of the lm-eval hook: the ``.pth`` line and the PEP 829 ``.start`` file call :func:`install`.

It runs in every Python process of the environment, so it stays tiny, imports nothing but ``sys``
(already loaded) and prints nothing. It puts a finder on ``sys.meta_path`` that answers no import;
right after lm-eval executes one of the modules of :data:`PATCHES`, it calls our function for that
module, and once all are patched it removes itself. Errors become a warning at that moment, never
an exception: lm-eval must keep working without our tasks.
"""

import sys

# lm-eval module -> (our module, its function, the attribute of lm-eval's module that the function patches)
PATCHES = {
    "lm_eval.tasks": ("discovery", "add_task_dir", "TaskManager"),  # index our task folder
    "lm_eval.models.utils_hf": ("stopping", "check_each_candidate", "MultiTokenEOSCriteria"),  # beam search stops
}


class LmEvalTasksFinder:
    """Meta-path finder that finds nothing, but has the modules of :data:`PATCHES` patched right after they execute."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in PATCHES:
            return None
        try:
            spec = _find_real_spec(self, fullname, path, target)
            if spec is not None and hasattr(spec.loader, "exec_module"):
                _call_after_exec(spec.loader, fullname)
            return spec
        except Exception as exc:  # never break lm_eval's import
            warn(fullname, exc)
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


def _call_after_exec(loader, name: str) -> None:
    run = loader.exec_module

    def exec_module(module):
        run(module)
        on_loaded(name, module)

    loader.exec_module = exec_module


def on_loaded(name: str, module) -> None:
    """lm-eval's module ``name`` of :data:`PATCHES` has executed: patch it; stop watching once all are patched."""
    import importlib

    ours, function, attribute = PATCHES[name]
    try:
        patch = getattr(importlib.import_module(f"{__package__}.{ours}"), function)
        patch(getattr(module, attribute))
    except Exception as exc:  # lm-eval changed shape: warn, keep lm-eval working
        warn(name, exc)
    if all(watched in sys.modules for watched in PATCHES):
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, LmEvalTasksFinder)]


def warn(target: str, exc: BaseException) -> None:
    import os
    import warnings

    if target == "lm_eval.tasks":
        effect = (
            "add its tasks (dora_commonsense, dora_commonsense_mc) to lm-eval. lm-eval works without them; to use "
            f"them, pass --include_path {os.path.dirname(os.path.abspath(__file__))}"
        )
    else:
        effect = "fix lm-eval's stop check under beam search: with num_beams > 1 lm-eval may cut answers short"
    warnings.warn(f"dora-plugins could not {effect} ({type(exc).__name__}: {exc})", RuntimeWarning, stacklevel=2)


def install() -> None:
    """Arm the finder, once; patch at once what lm-eval has already loaded."""
    try:
        for name in PATCHES:
            module = sys.modules.get(name)
            if module is not None:
                on_loaded(name, module)
        if not all(watched in sys.modules for watched in PATCHES) and not any(
            isinstance(f, LmEvalTasksFinder) for f in sys.meta_path
        ):
            sys.meta_path.insert(0, LmEvalTasksFinder())
    except Exception as exc:
        warn("lm_eval.tasks", exc)
