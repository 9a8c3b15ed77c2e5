"""Start-up hook: stock DoRA runs our layer where it should, and nothing is imported until then.

``dora_plugins_route.pth`` (and the PEP 829 ``.start`` file beside it) call :func:`install` at the start of
every Python process of the environment. It reads ``DORA_PLUGINS_ROUTE`` and arms a :class:`RouteFinder`,
which calls :func:`dora_plugins.route_peft` right after one of the watched modules has executed:

- not set (the default): the ``trl`` command line (``trl.cli``) and lm-eval's Hugging Face model
  (``lm_eval.models.huggingface``, which loads ``peft=`` adapters), whose INFO lines then show on stderr;
  ``trl.cli`` sets ``DORA_PLUGINS_ROUTE=1`` for the training processes it launches through accelerate;
- ``1``: every process, as soon as ``peft`` is imported;
- ``0``: nowhere. (``DoraConfig`` always runs our layer: asking for it is not automatic routing.)

It imports nothing but ``os`` and ``sys`` at start-up, never raises and never prints there: a problem here
must not break Python. If routing fails when a watched module loads, a warning says so and PEFT's DoRA runs.
"""

from __future__ import annotations

import os

from .import_hooks import AfterImport

ENV = "DORA_PLUGINS_ROUTE"
WATCHED = {"1": ("peft",), "": ("trl.cli", "lm_eval.models.huggingface")}


class RouteFinder(AfterImport):
    """Routes ``LoraConfig(use_dora=True)`` to our layer once a module of :data:`WATCHED` has loaded."""

    def __init__(self):
        self.names = frozenset(WATCHED["1" if os.environ.get(ENV, "").strip() == "1" else ""])

    def loaded(self, name: str, module) -> None:
        try:
            route(name)
        except Exception as exc:  # the watched module imported fine: keep it, say why routing is off
            import warnings

            warnings.warn(
                f"dora-plugins could not route LoraConfig(use_dora=True) to its layer ({type(exc).__name__}: "
                f"{exc}); PEFT's own DoRA runs.",
                RuntimeWarning,
                stacklevel=2,
            )


def route(trigger: str) -> None:
    """Route from now on; in the command lines we watch, show our INFO lines (which layer runs the adapter)."""
    import logging

    from .peft_layer import logger, route_peft

    if trigger == "trl.cli" and not os.environ.get(ENV, "").strip():
        # `trl sft` trains in a child that accelerate launch starts (trl/scripts/sft.py, which never imports
        # trl.cli): the children inherit this and route as soon as they import peft.
        os.environ[ENV] = "1"
    if trigger != "peft" and not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-8s [dora-plugins] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    route_peft(True)


def install() -> None:
    """Arm the finder for the setting of ``DORA_PLUGINS_ROUTE`` (once); route now if a watched module is loaded."""
    try:
        if os.environ.get(ENV, "").strip() != "0":
            RouteFinder.arm()
    except Exception:  # an interpreter must start whatever happens here
        return
