"""Fold an adapter into its base model and write a plain transformers model: no PEFT needed to load it."""

from __future__ import annotations

from pathlib import Path

from .adapter import check_adapter, load_adapter
from .models import check_model_source, load_causal_lm, torch_dtype
from .outputs import check_output, replace_directory
from .pull import resolve_model


def merge_adapter(
    base: str, adapter: str | Path, output: str | Path, dtype: str = "auto", overwrite: bool = False
) -> Path:
    """Load ``base`` + ``adapter``, merge, and write the model (safetensors) and tokenizer to ``output``.

    Every input is checked before the base model loads, and ``output`` is refused when it is, holds or lies in
    an input, or is a non-empty folder without ``overwrite``. The write is atomic: ``output`` holds the complete
    old or the complete new model at every instant. Returns the resolved output path.
    """
    base = resolve_model(base)
    target = check_output(output, {"base model": base, "adapter": adapter}, overwrite)
    check_adapter(Path(adapter))
    check_model_source(base)
    torch_dtype(dtype)
    model = load_causal_lm(base, dtype)
    merged = load_adapter(model, adapter).merge_and_unload(safe_merge=True)
    replace_directory(target, lambda folder: _save(merged, base, str(adapter), folder))
    return target


def _save(model, base: str, adapter: str, folder: Path) -> None:
    from transformers import AutoTokenizer

    model.save_pretrained(folder, safe_serialization=True)
    for source in (adapter, base):  # the adapter's tokenizer wins when training added tokens
        try:
            AutoTokenizer.from_pretrained(source).save_pretrained(folder)
            return
        except (OSError, ValueError):
            continue
