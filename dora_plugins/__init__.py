"""DoRA (Weight-Decomposed Low-Rank Adaptation) for PEFT, TRL and lm-eval.

Imports are lazy so that ``import dora_plugins`` stays cheap and never pulls in trl or lm_eval.
"""

from importlib import import_module

__version__ = "0.1.0"
__all__ = ["DoraConfig", "adapter_config", "get_plugin_manager", "load_adapter", "route_peft"]

_LAZY = {
    "DoraConfig": "dora_plugins.config",
    "adapter_config": "dora_plugins.presets",
    "get_plugin_manager": "dora_plugins.plugins",
    "load_adapter": "dora_plugins.adapter",
    "route_peft": "dora_plugins.peft_layer",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dora_plugins' has no attribute '{name}'")


def __dir__():
    return sorted(list(globals()) + __all__)
