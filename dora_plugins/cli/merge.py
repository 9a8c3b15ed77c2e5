"""``dora merge``: fold an adapter into its base model; the output loads with no PEFT involved."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dora merge", description=__doc__)
    parser.add_argument("--base", required=True, help="base model: a local directory or a hub id")
    parser.add_argument("--adapter", required=True, help="adapter directory written by save_pretrained")
    parser.add_argument("--output", required=True, help="directory for the merged model (safetensors)")
    parser.add_argument("--dtype", default="auto", help="dtype to load the base in: auto, float32, bfloat16, float16")
    args = parser.parse_args(argv)
    merge(args.base, args.adapter, args.output, dtype=args.dtype)
    print(f"Merged model written to {args.output}")
    return 0


def merge(base: str, adapter: str, output: str, dtype: str = "auto") -> None:
    """Load ``base`` + ``adapter``, merge, and write a plain transformers model directory to ``output``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dora_plugins.adapter import load_adapter, read_adapter_config

    read_adapter_config(Path(adapter))  # fail on a bad adapter before loading a large base model
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype)
    merged = load_adapter(model, adapter).merge_and_unload(safe_merge=True)
    save_atomically(output, lambda tmp: _save(merged, base, adapter, tmp, AutoTokenizer))


def _save(model, base: str, adapter: str, directory: str, tokenizer_cls) -> None:
    model.save_pretrained(directory, safe_serialization=True)
    for source in (adapter, base):  # the adapter's tokenizer wins when training added tokens
        try:
            tokenizer_cls.from_pretrained(source).save_pretrained(directory)
            return
        except (OSError, ValueError):
            continue


def save_atomically(output: str, write) -> None:
    """Run ``write(tmp_dir)`` and move the result to ``output``; a failure leaves ``output`` untouched."""
    target = Path(output).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the output is an ordinary folder
    try:
        write(str(tmp))
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old)
        else:
            tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
