"""The built-in plugin: the paper's adapter presets, the eight benchmarks, the extractors."""

from __future__ import annotations

from .hookspecs import hookimpl


def _dora(**overrides):
    from .config import DoraConfig

    return DoraConfig(**overrides)


def _dora_half(**overrides):
    from .config import DoraConfig

    return DoraConfig(**{"r": 16, "lora_alpha": 32, **overrides})


def _dora_qkv(**overrides):
    from .config import QKV_MAGNITUDE_ONLY_MODULES, QKV_TARGET_MODULES, DoraConfig

    defaults = dict(target_modules=list(QKV_TARGET_MODULES), magnitude_only_modules=list(QKV_MAGNITUDE_ONLY_MODULES))
    return DoraConfig(**{**defaults, **overrides})


def _lora(**overrides):
    from peft import LoraConfig

    from .config import PAPER_TARGET_MODULES

    defaults = dict(
        r=32, lora_alpha=64, lora_dropout=0.05, target_modules=list(PAPER_TARGET_MODULES), task_type="CAUSAL_LM"
    )
    return LoraConfig(**{**defaults, **overrides})


@hookimpl
def dora_adapter_presets(register):
    register("dora", _dora, "DoRA as in the paper: r=32, alpha=64, dropout 0.05, q,k,v,up,down")
    register("dora_half", _dora_half, "DoRA-dagger (half rank): r=16, alpha=32")
    register("dora_qkv", _dora_qkv, "DoRA on q,k,v (r=32, alpha=64); magnitude only on o,gate,up,down")
    register("lora", _lora, "LoRA baseline: r=32, alpha=64, dropout 0.05, q,k,v,up,down")


@hookimpl
def dora_benchmarks(register):
    from .benchmarks import BENCHMARKS

    for benchmark in BENCHMARKS:
        register(benchmark)


@hookimpl
def dora_answer_extractors(register):
    from .extract import improved, original

    register("original", original, "The paper's: first case-sensitive label match anywhere in the response")
    register("improved", improved, "What the model answered; echoes, contradictions and garbage give ''")
