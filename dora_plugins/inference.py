"""Reuse of DoRA's per-layer constants where the weights cannot change: inside ``generate()`` and lm-eval's requests.

A DoRA layer's output needs ``g = m / ||W0 + s B A||``, which reads all of ``W0``. Once per training
step that costs a few percent; once per generated token it costs more than the layer itself. Inside
:func:`inference_cache` a layer in eval mode without gradients computes ``g``, ``s g B`` and
``(1 - g) bias`` once and reuses them; on leaving the block they are dropped. Once dora-plugins' layer
is in use, every transformers ``generate()`` runs inside the block, and so do lm-eval's requests
(``HFLM.generate_until``, ``loglikelihood`` and ``loglikelihood_rolling``, which call ``generate()`` or
the model once per batch and never change a weight): one norm per layer for the whole run instead of
one per batch. lm-eval is patched by name when it loads (:class:`LmEvalHook`), never imported here.
Outside, nothing is cached, so every change to the weights (in place, through ``.data``, by a load or
an optimizer step) is always seen: the price of the cache is the promise not to change weights inside
the block.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import torch
from torch import nn

from .import_hooks import AfterImport

_holders: contextvars.ContextVar[list[nn.Module] | None] = contextvars.ContextVar("dora_inference", default=None)
_CACHE = "_dora_inference_cache"


@contextlib.contextmanager
def inference_cache() -> Iterator[None]:
    """Within the block, DoRA layers in eval mode without gradients compute their constants once and reuse them.

    Do not change any weight, magnitude or adapter scale inside the block. Nested blocks share the outer one.
    """
    if _holders.get() is not None:
        yield
        return
    holders: list[nn.Module] = []
    token = _holders.set(holders)
    try:
        yield
    finally:
        _holders.reset(token)
        for module in holders:
            module.__dict__.pop(_CACHE, None)


def cached(module: nn.Module, key: Hashable, compute: Callable[[], Any]) -> Any:
    """``compute()``, remembered on ``module`` under ``key`` inside :func:`inference_cache`; else just computed."""
    if torch.compiler.is_compiling():  # a compiled graph recomputes: nothing is traced through the cache
        return compute()
    holders = _holders.get()
    if holders is None:
        return compute()
    cache = module.__dict__.get(_CACHE)
    if cache is None:
        cache = module.__dict__[_CACHE] = {}
        holders.append(module)
    if key not in cache:
        cache[key] = compute()
    return cache[key]


def install_generate_hook() -> None:
    """Run every transformers ``generate()`` inside :func:`inference_cache` (once; a no-op for other models)."""
    from transformers.generation.utils import GenerationMixin

    generate = GenerationMixin.generate
    if getattr(generate, "_dora_plugins", False):
        return

    @functools.wraps(generate)
    def generate_with_cache(self, *args, **kwargs):
        with inference_cache():
            return generate(self, *args, **kwargs)

    generate_with_cache._dora_plugins = True  # type: ignore[attr-defined]
    # Patched on the class: lm-eval, TRL and users call generate() on models we never see built.
    GenerationMixin.generate = generate_with_cache  # type: ignore[method-assign]
    LmEvalHook.arm()


LM_EVAL_MODULE = "lm_eval.models.huggingface"
LM_EVAL_REQUESTS = ("generate_until", "loglikelihood", "loglikelihood_rolling")


class LmEvalHook(AfterImport):
    """Runs lm-eval's ``HFLM`` request methods (:data:`LM_EVAL_REQUESTS`) inside :func:`inference_cache`.

    Armed by the first DoRA layer built; patches ``HFLM`` when ``lm_eval.models.huggingface`` has loaded (or now,
    if it has), so nothing of lm-eval is imported for it.
    """

    names = frozenset({LM_EVAL_MODULE})

    def loaded(self, name: str, module) -> None:
        model_class = getattr(module, "HFLM", None)
        for method_name in LM_EVAL_REQUESTS:
            method = getattr(model_class, method_name, None)
            if callable(method) and not getattr(method, "_dora_plugins", False):
                setattr(model_class, method_name, _within_cache(method))


def _within_cache(method: Callable) -> Callable:
    @functools.wraps(method)
    def within_cache(self, *args, **kwargs):
        with inference_cache():
            return method(self, *args, **kwargs)

    within_cache._dora_plugins = True  # type: ignore[attr-defined]
    return within_cache
