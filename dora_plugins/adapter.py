"""Load adapters (ours or stock PEFT's) with clear errors; safetensors only, never pickle."""

from __future__ import annotations

import json
from pathlib import Path

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


def load_adapter(model, adapter: str | Path, adapter_name: str = "default", is_trainable: bool = False):
    """Wrap ``model`` in a ``PeftModel`` with the adapter saved at ``adapter``.

    A DoRA adapter (``use_dora: true``, saved by us or by stock PEFT) runs our DoRA layer;
    any other PEFT adapter loads as PEFT would load it.
    """
    from peft import PeftConfig, PeftModel
    from safetensors import SafetensorError, safe_open

    from .config import DoraConfig

    path = Path(adapter)
    config_data = read_adapter_config(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        pickled = [p.name for p in path.glob("adapter_model.bin")]
        hint = (
            f" Only a pickle checkpoint ({pickled[0]}) is there, which dora-plugins never loads; re-save it "
            "with save_pretrained(safe_serialization=True)."
            if pickled
            else " Save the adapter with save_pretrained() first."
        )
        raise FileNotFoundError(f"No {WEIGHTS_FILE} in adapter directory {path}.{hint}")
    try:
        with safe_open(str(weights), framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError) as exc:
        raise ValueError(
            f"Adapter weights {weights} are corrupt or not safetensors ({exc}). Re-save the adapter."
        ) from exc

    config_cls = DoraConfig if config_data.get("use_dora") else PeftConfig
    config = config_cls.from_pretrained(str(path))
    try:
        return PeftModel.from_pretrained(
            model, str(path), adapter_name=adapter_name, is_trainable=is_trainable, config=config
        )
    except RuntimeError as exc:
        if "size mismatch" not in str(exc):
            raise
        first = next(line.strip() for line in str(exc).splitlines() if "size mismatch" in line)
        base = config_data.get("base_model_name_or_path") or "the model it was trained on"
        raise ValueError(
            f"Adapter {path} does not fit this model: it was trained on a model of another shape "
            f"({first}). Load it onto {base}."
        ) from None


def read_adapter_config(path: Path) -> dict:
    """The parsed ``adapter_config.json`` of an adapter directory, or a clear error."""
    if not path.is_dir():
        raise FileNotFoundError(
            f"Adapter directory {path} does not exist. Pass the folder that save_pretrained() wrote "
            f"(it holds {CONFIG_FILE} and {WEIGHTS_FILE})."
        )
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"No {CONFIG_FILE} in adapter directory {path}; is this a PEFT adapter folder?")
    try:
        data = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config_file} is not valid JSON ({exc}). Re-save the adapter.") from exc
    if not isinstance(data, dict) or "peft_type" not in data:
        raise ValueError(f"{config_file} is not a PEFT adapter config (no 'peft_type').")
    return data
