"""Base models by local folder or hub id, checked before anything heavy loads, with errors that say what to do."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import ConfigError, MissingFileError

DTYPES = ("auto", "float32", "bfloat16", "float16")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def check_model_source(source: str, what: str = "base model") -> None:
    """Raise a :class:`~dora_plugins.errors.DoraError` unless ``source`` is a model folder or a usable hub id.

    Offline (``HF_HUB_OFFLINE=1``) a hub id must already be in the local cache.
    """
    source = str(source)
    path = Path(source).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise MissingFileError(f"The {what} folder {source} has no config.json; pass a transformers model folder.")
        return
    if not _HUB_ID.fullmatch(source) or ".." in source or "--" in source:
        raise MissingFileError(
            f"The {what} {source} is neither an existing folder nor a hub id (owner/name). Check the path."
        )
    if _offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(source, "config.json"), str):
            raise MissingFileError(
                f"The {what} {source} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 forbids "
                "downloading it. Download it once with network access, or pass a local folder."
            )


def torch_dtype(name: str | None):
    """``"auto"`` / None, or the torch dtype called ``name``; a clear error for anything else."""
    import torch

    if name in (None, "auto"):
        return name
    if name not in DTYPES:
        raise ConfigError(f"Unknown dtype '{name}'. Use one of: {', '.join(DTYPES)}.")
    return getattr(torch, name)


def load_causal_lm(source: str, dtype: str | None = "auto", what: str = "base model", **kwargs):
    """``AutoModelForCausalLM.from_pretrained(source)`` after :func:`check_model_source`; load errors named."""
    from transformers import AutoModelForCausalLM

    check_model_source(source, what)
    try:
        return AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype(dtype), **kwargs)
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MissingFileError(f"Could not load the {what} {source}: {first}") from exc


def _offline() -> bool:
    flags = (os.environ.get(name, "").lower() for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flag in ("1", "true", "yes") for flag in flags)
