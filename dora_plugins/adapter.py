"""Load adapters (ours or stock PEFT's) with clear errors; safetensors only, never pickle."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ConfigError, DataError, MissingFileError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


def load_adapter(
    model,
    adapter: str | Path,
    adapter_name: str = "default",
    is_trainable: bool = False,
    low_cpu_mem_usage: bool = False,
):
    """Wrap ``model`` in a ``PeftModel`` with the adapter saved at ``adapter``.

    A DoRA adapter (``use_dora: true``, saved by us or by stock PEFT) runs our DoRA layer;
    any other PEFT adapter loads as PEFT would load it. The files are checked first (:func:`check_adapter`).
    ``low_cpu_mem_usage`` is PEFT's: the adapter is built on the meta device and filled from the file.
    """
    from peft import PeftConfig, PeftModel

    from .config import DoraConfig

    path = Path(adapter)
    config_data = check_adapter(path)
    config_cls = DoraConfig if config_data.get("use_dora") else PeftConfig
    config = config_cls.from_pretrained(str(path))
    try:
        return PeftModel.from_pretrained(
            model,
            str(path),
            adapter_name=adapter_name,
            is_trainable=is_trainable,
            config=config,
            low_cpu_mem_usage=low_cpu_mem_usage,
        )
    except RuntimeError as exc:
        if "size mismatch" not in str(exc):
            raise
        first = next(line.strip() for line in str(exc).splitlines() if "size mismatch" in line)
        base = config_data.get("base_model_name_or_path") or "the model it was trained on"
        raise ConfigError(
            f"Adapter {path} does not fit this model: it was trained on a model of another shape "
            f"({first}). Load it onto {base}."
        ) from None


def check_adapter(path: Path) -> dict:
    """The adapter's config, after checking its files: valid config, safetensors weights, every tensor present
    and finite. Cheap next to loading a base model, so commands call it first."""
    config = read_adapter_config(path)
    tensors = _read_weights(path / WEIGHTS_FILE, path)
    _check_tensors(tensors, config, path / WEIGHTS_FILE)
    return config


def read_adapter_config(path: Path) -> dict:
    """The parsed ``adapter_config.json`` of an adapter directory, or a clear error."""
    if not path.is_dir():
        raise MissingFileError(
            f"Adapter directory {path} does not exist. Pass the folder that save_pretrained() wrote "
            f"(it holds {CONFIG_FILE} and {WEIGHTS_FILE})."
        )
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        raise MissingFileError(f"No {CONFIG_FILE} in adapter directory {path}; is this a PEFT adapter folder?")
    try:
        data = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config_file} is not valid JSON ({exc}). Re-save the adapter.") from exc
    if not isinstance(data, dict) or "peft_type" not in data:
        raise ConfigError(f"{config_file} is not a PEFT adapter config (no 'peft_type').")
    return data


def _read_weights(weights: Path, path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not weights.is_file():
        pickled = [p.name for p in path.glob("adapter_model.bin")]
        hint = (
            f" Only a pickle checkpoint ({pickled[0]}) is there, which dora-plugins never loads; re-save it "
            "with save_pretrained(safe_serialization=True)."
            if pickled
            else " Save the adapter with save_pretrained() first."
        )
        raise MissingFileError(f"No {WEIGHTS_FILE} in adapter directory {path}.{hint}")
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise DataError(
            f"Adapter weights {weights} are corrupt or not safetensors ({exc}). Re-save the adapter."
        ) from exc


def _check_tensors(tensors: dict, config: dict, weights: Path) -> None:
    """Every LoRA factor has its partner (and, for DoRA, its magnitude); no value is NaN or infinite."""
    if not tensors:
        raise DataError(f"Adapter weights {weights} hold no tensors. Re-save the adapter.")
    if config.get("peft_type") == "LORA":
        prefixes = {key.split(".lora_A.")[0] for key in tensors if ".lora_A." in key}
        needed = ["lora_B"] + (["lora_magnitude_vector"] if config.get("use_dora") else [])
        for prefix in sorted(prefixes):
            missing = [name for name in needed if not any(k.startswith(f"{prefix}.{name}") for k in tensors)]
            if missing:
                raise DataError(
                    f"Adapter weights {weights} lack {', '.join(missing)} for {prefix}: the file is incomplete. "
                    "Re-save the adapter."
                )
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            raise DataError(
                f"Adapter weights {weights}: tensor {key} holds NaN or infinite values (training diverged?). "
                "Use an earlier checkpoint."
            )
