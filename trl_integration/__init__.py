"""TRL integration for dora-plugins: LLM-Adapters data for ``SFTTrainer``, ``dora sft``, callbacks.

Imports are lazy, so that ``dora --help`` does not pay for importing trl.
"""

from importlib import import_module

__all__ = [
    "DoraDynamicsCallback",
    "DoraSFTConfig",
    "DoraSFTTrainer",
    "build_peft_config",
    "load_records",
    "sft_datasets",
]

_LAZY = {
    "DoraDynamicsCallback": "trl_integration.callbacks",
    "DoraSFTConfig": "trl_integration.sft_config",
    "DoraSFTTrainer": "trl_integration.trainer",
    "build_peft_config": "trl_integration.peft_config",
    "load_records": "trl_integration.data",
    "sft_datasets": "trl_integration.data",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trl_integration' has no attribute '{name}'")


def __dir__():
    return sorted(list(globals()) + __all__)
