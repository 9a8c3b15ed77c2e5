"""``adapter_config(name, **overrides)``: a PEFT config from a registered preset."""

from __future__ import annotations

import dataclasses

from .errors import ConfigError
from .plugins import lookup
from .suggestions import did_you_mean


def adapter_config(name: str, **overrides):
    """The ``peft.LoraConfig`` of preset ``name`` ("dora", "dora_half", "lora", or a plugin's), with overrides."""
    factory = lookup("preset", name).value
    try:
        return factory(**overrides)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        config_fields = {f.name for f in dataclasses.fields(factory())}
        bad = sorted(set(overrides) - config_fields)
        raise ConfigError(
            " ".join(f"Unknown option '{key}' for preset '{name}'.{did_you_mean(key, config_fields)}" for key in bad)
            + " Options are the fields of peft.LoraConfig."
        ) from exc
