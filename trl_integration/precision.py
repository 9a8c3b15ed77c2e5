"""Which dtypes a run uses: base weights in half precision on a GPU, adapters and magnitude in fp32.

The paper (NVlabs/DoRA ``commonsense_reasoning/finetune.py``) loads the base model with
``torch_dtype=torch.float16`` and trains with ``fp16=True`` (fp16 mixed precision, loss scaling);
its DoRA factors and magnitude are created in fp32. ``precision="paper"`` does exactly that.
``precision="auto"`` (the default) does the same in bf16 where the GPU has it (Ampere or newer), which
needs no loss scaling, and fp16 otherwise. Base weights and autocast share a dtype, so no base weight is
cast at any matrix product. Adapters and magnitude stay fp32 either way (PEFT upcasts adapter weights),
except on a k-bit base, where TRL casts LoRA A and B to bf16 and exempts only ``lora_magnitude_vector``.
Without a CUDA GPU everything else is fp32. The ``setup:`` line (:mod:`trl_integration.setup_report`) shows
what a run got.
"""

from __future__ import annotations

from dora_plugins.errors import ConfigError
from dora_plugins.suggestions import did_you_mean

PRECISIONS = ("auto", "paper")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def gpu_half_dtype() -> str | None:
    """``"bfloat16"`` on a CUDA GPU that supports it, ``"float16"`` on an older one, None without a CUDA GPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def mixed_precision(precision: str, gpu_half: str | None) -> str | None:
    """The autocast dtype (``"bfloat16"``/``"float16"``, also the base weights' dtype) or None for fp32 throughout."""
    if precision not in PRECISIONS:
        raise ConfigError(
            f"Unknown precision '{precision}'.{did_you_mean(precision, PRECISIONS)} Use 'auto' (bf16 where the GPU "
            "has it, else fp16) or 'paper' (fp16 weights and fp16 mixed precision, as the paper's finetune.py)."
        )
    if gpu_half is None:
        return None
    return "float16" if precision == "paper" else gpu_half


def describe(amp: str | None, gpu_half: str | None, kbit: str | None = None) -> str:
    """One line: the dtype of base weights, adapters and magnitude, and the autocast.

    ``kbit`` (``"4-bit"``/``"8-bit"``): a bitsandbytes base, whose LoRA A and B TRL casts to bf16.
    """
    base, adapters = (f"{kbit} (bitsandbytes)", "bfloat16 (TRL's k-bit cast)") if kbit else (amp, "float32")
    if amp is None:
        where = "no CUDA GPU here" if gpu_half is None else "no mixed precision"
        return f"base weights {base or 'float32'}, adapters {adapters}, magnitude float32, no autocast ({where})"
    scaling = ", with loss scaling" if amp == "float16" else ""
    return f"base weights {base}, adapters {adapters}, magnitude float32, autocast {amp}{scaling}"
