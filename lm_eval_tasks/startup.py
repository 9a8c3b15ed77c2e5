"""Start-up entry of the lm-eval hook: the ``.pth`` line and the PEP 829 ``.start`` file call :func:`install`.

It runs in every Python process of the environment, so it stays tiny, imports nothing but the
stdlib-only :mod:`dora_plugins.import_hooks`, and prints nothing. It puts a finder on ``sys.meta_path``
that answers no import; right after lm-eval executes one of the modules of :data:`PATCHES`, it calls our
function for that module, and once all are patched it removes itself. Errors become a warning at that
moment, never an exception: lm-eval must keep working without our tasks.
"""

from dora_plugins.import_hooks import AfterImport

# lm-eval module -> (our module, its function, the attribute of lm-eval's module that the function patches)
PATCHES = {
    "lm_eval.tasks": ("discovery", "add_task_dir", "TaskManager"),  # index our task folder
    "lm_eval.models.utils_hf": ("stopping", "check_each_candidate", "MultiTokenEOSCriteria"),  # beam search stops
}


class LmEvalTasksFinder(AfterImport):
    """Has the modules of :data:`PATCHES` patched right after they execute (see :mod:`dora_plugins.import_hooks`)."""

    names = frozenset(PATCHES)

    def loaded(self, name: str, module) -> None:
        on_loaded(name, module)


def on_loaded(name: str, module) -> None:
    """lm-eval's module ``name`` of :data:`PATCHES` has executed: patch it."""
    import importlib

    ours, function, attribute = PATCHES[name]
    try:
        patch = getattr(importlib.import_module(f"{__package__}.{ours}"), function)
        patch(getattr(module, attribute))
    except Exception as exc:  # lm-eval changed shape: warn, keep lm-eval working
        warn(name, exc)


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
        LmEvalTasksFinder.arm()
    except Exception as exc:
        warn("lm_eval.tasks", exc)
