"""The PEFT config of a ``dora sft`` run: a registered preset, overridden by TRL's ``--lora_*`` flags.

TRL's ``ModelConfig`` flags keep their meaning (``--lora_r``, ``--lora_alpha``, ``--lora_dropout``,
``--lora_target_modules``, ``--use_rslora``, ``--lora_modules_to_save``, ...); a flag left unset
keeps the preset's value, which is why the ``dora sft`` parser gives the rank, alpha, dropout and
targets a default of None.
"""

from __future__ import annotations

import dataclasses
import re

from dora_plugins import adapter_config
from dora_plugins.errors import ConfigError
from dora_plugins.magnitude_only import dora_modules, matches
from dora_plugins.suggestions import did_you_mean

# ModelConfig field -> LoraConfig field, passed on only when set (not None / not False).
_OVERRIDES = {
    "lora_r": "r",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "lora_target_modules": "target_modules",
    "lora_target_parameters": "target_parameters",
    "lora_modules_to_save": "modules_to_save",
    "use_rslora": "use_rslora",
}


def build_peft_config(
    preset: str, model_args=None, detach_norm: bool = True, magnitude_only_modules: list[str] | str | None = None
):
    """``adapter_config(preset)`` with the ``--lora_*`` values that ``model_args`` (TRL ModelConfig) sets, and ours."""
    overrides = {}
    for source, target in _OVERRIDES.items():
        value = getattr(model_args, source, None)
        if value is not None and value is not False:
            overrides[target] = value
    targets = overrides.get("target_modules")
    if isinstance(targets, str) and targets != "all-linear" and _plain_name(targets):
        overrides["target_modules"] = [targets]  # TRL turns a one-item list into a string, which PEFT reads as a regex
    config = adapter_config(preset, **overrides)
    if getattr(model_args, "use_dora", False) and not config.use_dora:
        raise ConfigError(f"--use_dora was given but preset '{preset}' is not DoRA; use --preset dora or dora_half.")
    fields = {f.name for f in dataclasses.fields(config)}
    if magnitude_only_modules is not None:
        if "magnitude_only_modules" not in fields:
            raise ConfigError(f"magnitude_only_modules needs a DoRA preset; preset '{preset}' is plain LoRA.")
        if isinstance(magnitude_only_modules, str) and _plain_name(magnitude_only_modules):  # a YAML scalar
            magnitude_only_modules = [magnitude_only_modules]
        config = adapter_config(preset, **overrides, magnitude_only_modules=magnitude_only_modules)
    if "detach_norm" in fields:
        config.detach_norm = detach_norm
    elif not detach_norm:
        raise ConfigError(f"detach_norm=False needs a DoRA preset; preset '{preset}' is {type(config).__name__}.")
    return config


def _plain_name(value: str) -> bool:
    """A module name rather than a regex (a YAML scalar, or TRL's string for a one-item list)."""
    return re.fullmatch(r"[\w.]+", value) is not None


def check_target_modules(model, peft_config) -> None:
    """Raise a clear ``ConfigError`` when a target (or magnitude-only) module name matches no module of ``model``."""
    targets = peft_config.target_modules
    modules = getattr(peft_config, "magnitude_only_modules", None)
    if modules is not None:
        targets = dora_modules(targets, modules)
        _check_names(model, modules, "magnitude_only_modules", "--magnitude_only_modules")
    _check_names(model, targets, "Target module(s)", "--lora_target_modules (target_modules=...)")


def _check_names(model, patterns, what: str, option: str) -> None:
    if not patterns or patterns == "all-linear":  # PEFT resolves "all-linear" itself
        return
    names = [name for name, _ in model.named_modules()]
    linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if _is_linear(module)})
    if isinstance(patterns, str):
        if not any(matches(patterns, name) for name in names):
            example = next((name for name, module in model.named_modules() if _is_linear(module)), names[-1])
            raise ConfigError(
                f"{what} {patterns!r} (a regex) matches no module of {type(model).__name__}; it must match a whole "
                f"module name such as {example!r}. Its linear layers are: {', '.join(linear)}."
            )
        return
    missing = [t for t in patterns if not any(matches([t], n) for n in names)]
    if not missing:
        return
    hints = "".join(did_you_mean(name, linear, naming_value=True) for name in missing)
    raise ConfigError(
        f"{what} {missing} not found in {type(model).__name__}.{hints} Its linear layers are: "
        f"{', '.join(linear)}. Set {option} to some of them."
    )


def _is_linear(module) -> bool:
    import torch

    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"  # GPT-2 style layers
