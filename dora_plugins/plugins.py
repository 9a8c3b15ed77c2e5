"""The one plugin manager: built-ins from an explicit list, third parties from entry points.

This is the only module that calls hooks; everything else asks it: ``lookup(kind, name)`` for one item,
``get_benchmarks()`` and its siblings for all of a kind.
``DORA_PLUGINS_LOAD`` (comma-separated entry point names; empty means none) limits which
third-party plugins load, like ``LLM_LOAD_PLUGINS`` in simonw/llm.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import warnings
from dataclasses import dataclass
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError, UnknownNameError
from .suggestions import did_you_mean

ENTRY_POINT_GROUP = "dora_plugins"
BUILTIN_PLUGINS = ("dora_plugins.builtin",)


@dataclass(frozen=True)
class Registered:
    """One named item (a preset, a benchmark, an extractor) and the plugin that provided it."""

    name: str
    value: Any
    description: str
    plugin: str


_pm: pluggy.PluginManager | None = None
_load_errors: dict[str, str] = {}
# hook name -> (the implementations it was collected from, the items): extractors and benchmarks are
# looked up for every answer, so a hook runs again only when a plugin was registered or removed.
_collected: dict[str, tuple[tuple, dict[str, Registered]]] = {}


def get_plugin_manager() -> pluggy.PluginManager:
    """The shared plugin manager, with built-ins and entry-point plugins loaded on first use."""
    global _pm
    if _pm is None:
        pm = pluggy.PluginManager("dora_plugins")
        pm.add_hookspecs(hookspecs)
        for module_name in BUILTIN_PLUGINS:
            pm.register(importlib.import_module(module_name), name=module_name)
        _load_entry_points(pm)
        _pm = pm
    return _pm


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    allowed = os.environ.get("DORA_PLUGINS_LOAD")
    allowed_names = None if allowed is None else {n.strip() for n in allowed.split(",") if n.strip()}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if allowed_names is not None and ep.name not in allowed_names:
            continue
        if pm.get_plugin(ep.name) is not None:
            continue  # the same distribution seen twice on sys.path
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:  # a broken plugin must not take the others down
            _load_errors[ep.name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"dora-plugins: plugin '{ep.name}' ({ep.value}) failed to load and was skipped: {exc}",
                stacklevel=2,
            )


def load_errors() -> dict[str, str]:
    """Plugins that failed to load or to register, by name, with the error."""
    get_plugin_manager()
    return dict(_load_errors)


def _named(name: str, value: Any, description: str = "") -> tuple[str, Any, str]:
    return name, value, description


def _benchmark(benchmark) -> tuple[str, Any, str]:
    return benchmark.name, benchmark, benchmark.description


def _collect(hook_name: str, unpack=_named) -> dict[str, Registered]:
    """Run one hook plugin by plugin, so that errors and collisions name the plugin responsible."""
    impls = tuple(getattr(get_plugin_manager().hook, hook_name).get_hookimpls())
    cached = _collected.get(hook_name)
    if cached is None or cached[0] != impls:
        _collected[hook_name] = cached = (impls, _run_hook(hook_name, impls, unpack))
    return dict(cached[1])


def _run_hook(hook_name: str, impls: tuple, unpack) -> dict[str, Registered]:
    items: dict[str, Registered] = {}
    for impl in impls:
        plugin = impl.plugin_name
        mine: dict[str, Registered] = {}

        def register(*args, _plugin=plugin, _mine=mine, **kwargs):
            name, value, description = unpack(*args, **kwargs)
            _mine[name] = Registered(name, value, description, _plugin)

        try:
            impl.function(register)
        except Exception as exc:  # a broken plugin is reported and skipped; the others keep working
            _load_errors[plugin] = f"{hook_name}: {type(exc).__name__}: {exc}"
            warnings.warn(f"dora-plugins: plugin '{plugin}' failed in {hook_name} and was skipped: {exc}", stacklevel=2)
            continue
        for name, item in mine.items():
            if name in items:
                raise PluginError(
                    f"'{name}' is registered twice through {hook_name}: by plugin '{items[name].plugin}' "
                    f"and by plugin '{plugin}'. Uninstall one, or limit plugins with DORA_PLUGINS_LOAD."
                )
            items[name] = item
    return dict(sorted(items.items()))


def get_adapter_presets() -> dict[str, Registered]:
    """Adapter presets by name; each value is a factory ``(**overrides) -> peft.PeftConfig``."""
    return _collect("dora_adapter_presets")


def get_benchmarks() -> dict[str, Registered]:
    """Benchmarks by name; each value is a :class:`dora_plugins.benchmarks.Benchmark`."""
    return _collect("dora_benchmarks", _benchmark)


def get_answer_extractors() -> dict[str, Registered]:
    """Answer extractors by name; each value is ``(text, benchmark, options) -> label``."""
    return _collect("dora_answer_extractors")


def lookup(kind: str, name: str) -> Registered:
    """The registered ``kind`` ("preset", "benchmark" or "extractor") called ``name``.

    An unknown name raises :class:`UnknownNameError` naming the closest registered name and all of them.
    """
    noun, hook, get_all = _KINDS[kind]
    items = get_all()
    if name not in items:
        raise UnknownNameError(
            f"Unknown {noun} '{name}'.{did_you_mean(name, items)} Available: {', '.join(items)}. "
            f"They come from the {hook} hook ('dora plugins' lists them)."
        )
    return items[name]


_KINDS = {
    "preset": ("preset", "dora_adapter_presets", get_adapter_presets),
    "benchmark": ("benchmark", "dora_benchmarks", get_benchmarks),
    "extractor": ("answer extractor", "dora_answer_extractors", get_answer_extractors),
}


def reset() -> None:
    """Forget the loaded plugins (tests, or after installing a plugin in a running process)."""
    global _pm
    _pm = None
    _load_errors.clear()
    _collected.clear()
