"""``DoraConfig``: a ``peft.LoraConfig`` with ``use_dora=True``, the paper's defaults and our layer.

It is a real ``LoraConfig``: ``get_peft_model``, ``trl.SFTTrainer(peft_config=...)`` and
``save_pretrained`` treat it as one, and the saved ``adapter_config.json`` stays
``peft_type: LORA, use_dora: true`` so stock PEFT loads it.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field

from peft import LoraConfig
from peft.utils import PeftType

from .errors import ConfigError
from .peft_layer import CUSTOM_MODULES

# The paper's commonsense setting (Liu et al. 2024, table 8 and the released scripts).
PAPER_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]


@dataclass
class DoraConfig(LoraConfig):
    """DoRA with the paper's defaults: r=32, lora_alpha=64, dropout 0.05, q/k/v/up/down projections."""

    r: int = field(default=32, metadata={"help": "LoRA rank of the direction update."})
    lora_alpha: int = field(default=64, metadata={"help": "LoRA alpha; the scaling is lora_alpha / r."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the adapter input (paper mode)."})
    target_modules: list[str] | str | None = field(
        default_factory=lambda: list(PAPER_TARGET_MODULES),
        metadata={"help": "Module names (or a regex) that get a DoRA adapter."},
    )
    task_type: str | None = field(default="CAUSAL_LM", metadata={"help": "PEFT task type."})
    use_dora: bool = field(default=True, metadata={"help": "Always True for a DoraConfig.", "is_lora_variant": True})
    detach_norm: bool = field(
        default=True,
        metadata={"help": "Treat the weight norm as a constant in backward (paper section 4.3)."},
    )

    def __post_init__(self):
        _check_positive("r", self.r)
        _check_positive("lora_alpha", self.lora_alpha)
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}.")
        if not self.use_dora:
            raise ConfigError("DoraConfig requires use_dora=True; for plain LoRA use peft.LoraConfig.")
        super().__post_init__()
        self._register_custom_module(CUSTOM_MODULES)

    def to_dict(self) -> dict:
        # Stock PEFT warns about keys it does not know; only write detach_norm when it is not the default.
        data = super().to_dict()
        if self.detach_norm:
            data.pop("detach_norm", None)
        return data

    @classmethod
    def from_peft_type(cls, **kwargs) -> DoraConfig:
        """Build from a saved ``adapter_config.json`` (ours or stock PEFT's DoRA)."""
        peft_type = kwargs.pop("peft_type", PeftType.LORA)
        if peft_type != PeftType.LORA or not kwargs.get("use_dora", False):
            raise ConfigError(
                f"Not a DoRA adapter config (peft_type={peft_type}, use_dora={kwargs.get('use_dora')}); "
                "load it with peft.PeftConfig.from_pretrained instead."
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            warnings.warn(f"Ignoring adapter config keys this PEFT version does not know: {unknown}", stacklevel=2)
        return cls(**{k: v for k, v in kwargs.items() if k in known})


def _check_positive(name: str, value) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}.")
