"""``adapter_config(name, **overrides)``: a PEFT config from a registered preset."""

from __future__ import annotations

import dataclasses
import difflib

from .plugins import get_adapter_presets


def adapter_config(name: str, **overrides):
    """The ``peft.LoraConfig`` of preset ``name`` ("dora", "dora_half", "lora", or a plugin's), with overrides."""
    presets = get_adapter_presets()
    if name not in presets:
        raise ValueError(_unknown("preset", name, presets))
    factory = presets[name].value
    try:
        return factory(**overrides)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        config_fields = {f.name for f in dataclasses.fields(factory())}
        bad = sorted(set(overrides) - config_fields)
        raise ValueError(
            " ".join(f"Unknown option '{key}' for preset '{name}'.{_did_you_mean(key, config_fields)}" for key in bad)
            + " Options are the fields of peft.LoraConfig."
        ) from exc


def _did_you_mean(value: str, known) -> str:
    close = difflib.get_close_matches(value, list(known), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _unknown(kind: str, value: str, known) -> str:
    return f"Unknown {kind} '{value}'.{_did_you_mean(value, known)} Available: {', '.join(sorted(known))}"
