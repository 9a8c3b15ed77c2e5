"""Start-up hook: stock DoRA runs our layer where it should, and nothing is imported until then.

``dora_plugins_route.pth`` (and the PEP 829 ``.start`` file beside it) call :func:`install` at the start of
every Python process of the environment. It reads ``DORA_PLUGINS_ROUTE`` and arms a finder on
``sys.meta_path`` that answers no import, but calls :func:`dora_plugins.route_peft` right after one of the
watched modules has executed:

- not set (the default): the ``trl`` command line (``trl.cli``) and lm-eval's Hugging Face model
  (``lm_eval.models.huggingface``, which loads ``peft=`` adapters), whose INFO lines then show on stderr;
- ``1``: every process, as soon as ``peft`` is imported;
- ``0``: nowhere. (``DoraConfig`` always runs our layer: asking for it is not automatic routing.)

It imports nothing but ``os`` and ``sys``, never raises and never prints at start-up: a problem here must
not break Python. If routing fails when the watched module loads, a warning says so and PEFT's DoRA runs.
"""

from __future__ import annotations

import os
import sys

ENV = "DORA_PLUGINS_ROUTE"
WATCHED = {"1": ("peft",), "": ("trl.cli", "lm_eval.models.huggingface")}


class AfterImport:
    """A meta-path finder that finds nothing, but runs ``callback(name)`` once one of ``names`` has executed."""

    def __init__(self, names, callback):
        self.names = frozenset(names)
        self.callback = callback

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.names:
            return None
        try:
            spec = _real_spec(self, fullname, path, target)
            if spec is not None and hasattr(spec.loader, "exec_module"):
                _after_exec(spec.loader, lambda: self.callback(fullname))
            return spec
        except Exception:  # never break the import we watch
            return None


def _real_spec(finder, fullname, path, target):
    """The spec that the rest of ``sys.meta_path`` finds for ``fullname``, as if ``finder`` were not there."""
    for other in list(sys.meta_path):
        find_spec = getattr(other, "find_spec", None)
        if other is finder or find_spec is None:
            continue
        spec = find_spec(fullname, path, target)
        if spec is not None:
            return spec
    return None


def _after_exec(loader, callback) -> None:
    run = loader.exec_module

    def exec_module(module):
        run(module)
        try:
            callback()
        except Exception as exc:  # the watched module imported fine: keep it, say why routing is off
            import warnings

            warnings.warn(
                f"dora-plugins could not route LoraConfig(use_dora=True) to its layer ({type(exc).__name__}: "
                f"{exc}); PEFT's own DoRA runs.",
                RuntimeWarning,
                stacklevel=2,
            )

    loader.exec_module = exec_module


def route(trigger: str) -> None:
    """Route from now on; in the command lines we watch, show our INFO lines (which layer runs the adapter)."""
    import logging

    from .peft_layer import logger, route_peft

    if trigger != "peft" and not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-8s [dora-plugins] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    route_peft(True)


def install() -> None:
    """Arm the finder for the setting of ``DORA_PLUGINS_ROUTE`` (once); route now if a watched module is loaded."""
    try:
        setting = os.environ.get(ENV, "").strip()
        if setting == "0":
            return
        names = WATCHED["1" if setting == "1" else ""]
        loaded = [name for name in names if name in sys.modules]
        if loaded:
            route(loaded[0])
        elif not any(isinstance(f, AfterImport) for f in sys.meta_path):
            sys.meta_path.insert(0, AfterImport(names, route))
    except Exception:  # an interpreter must start whatever happens here
        return
