"""``DoraConfig``: a ``peft.LoraConfig`` with ``use_dora=True``, the paper's defaults and our layer.

It is a real ``LoraConfig``: ``get_peft_model``, ``trl.SFTTrainer(peft_config=...)`` and
``save_pretrained`` treat it as one, and the saved ``adapter_config.json`` stays
``peft_type: LORA, use_dora: true`` so stock PEFT loads it.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field

from peft import LoraConfig
from peft.utils import PeftType

from . import magnitude_only
from .dora import DROPOUT_MODES
from .errors import ConfigError
from .peft_layer import CUSTOM_MODULES

# The paper's commonsense setting (Liu et al. 2024, table 8 and the released scripts).
PAPER_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
# The paper's section 5.6 variant (llama_7B_Dora_qkv.sh): DoRA on these, the magnitude only on the others.
QKV_TARGET_MODULES = ["q_proj", "k_proj", "v_proj"]
QKV_MAGNITUDE_ONLY_MODULES = ["o_proj", "gate_proj", "up_proj", "down_proj"]


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
    # PEFT declares TaskType | None; it accepts the enum's string value, which is what a saved config holds.
    task_type: str | None = field(  # type: ignore[assignment]
        default="CAUSAL_LM", metadata={"help": "PEFT task type."}
    )
    use_dora: bool = field(default=True, metadata={"help": "Always True for a DoraConfig.", "is_lora_variant": True})
    detach_norm: bool = field(
        default=True,
        metadata={"help": "Treat the weight norm as a constant in backward (paper section 4.3)."},
    )
    dropout_mode: str = field(
        default="paper",
        metadata={
            "help": "Where lora_dropout applies: 'paper' (PEFT and the paper's code: the base path's W0 x is dropped "
            "too, one more base matrix product) or 'lora_branch' (torchtune: only the LoRA input, LoRA's cost)."
        },
    )
    magnitude_only_modules: list[str] | str | None = field(
        default=None,
        metadata={
            "help": "Module names (or a regex) where only the magnitude trains, W' = m * W0 / ||W0|| (the paper's "
            "Wdecompose_target_modules); not in target_modules. Saved as rank-1 DoRA with zero factors."
        },
    )

    def __post_init__(self):
        _check_positive("r", self.r, integer=True)
        _check_positive("lora_alpha", self.lora_alpha)
        if not isinstance(self.lora_dropout, (int, float)) or not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout must be a number in [0, 1), got {self.lora_dropout!r}.")
        if self.dropout_mode not in DROPOUT_MODES:
            raise ConfigError(f"dropout_mode must be one of {', '.join(DROPOUT_MODES)}; got {self.dropout_mode!r}.")
        if not self.use_dora:
            raise ConfigError("DoraConfig requires use_dora=True; for plain LoRA use peft.LoraConfig.")
        if self.magnitude_only_modules is not None:
            self.magnitude_only_modules = magnitude_only.check_modules(self.magnitude_only_modules)
            magnitude_only.check_init(self.init_lora_weights)
            self.target_modules, self.rank_pattern = magnitude_only.expand(
                self.target_modules, dict(self.rank_pattern or {}), self.magnitude_only_modules
            )
        super().__post_init__()
        self._register_custom_module(CUSTOM_MODULES)

    def is_magnitude_only(self, module_name: str) -> bool:
        """Whether the module ``module_name`` (as ``model.named_modules()`` names it) trains its magnitude only."""
        modules = self.magnitude_only_modules
        if modules is None or not magnitude_only.matches(modules, module_name):
            return False
        magnitude_only.check_module(magnitude_only.dora_modules(self.target_modules, modules), modules, module_name)
        return True

    def to_dict(self) -> dict:
        # Stock PEFT warns about keys it does not know: ours are written only when they are not the default.
        data = super().to_dict()
        for name, default in (("detach_norm", True), ("dropout_mode", "paper"), ("magnitude_only_modules", None)):
            if data.get(name) == default:
                data.pop(name)
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
        # A saved file means what stock PEFT reads in it: a key it lacks takes LoraConfig's default, not ours.
        return cls(**{**_lora_defaults(), **{k: v for k, v in kwargs.items() if k in known}})


def _lora_defaults() -> dict:
    """LoraConfig's defaults for the fields whose default DoraConfig changes."""
    lora_fields = {f.name: f for f in dataclasses.fields(LoraConfig)}
    defaults = {}
    for name in ("r", "lora_alpha", "lora_dropout", "target_modules", "task_type"):
        f = lora_fields[name]
        defaults[name] = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
    return defaults


def _check_positive(name: str, value, integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if not isinstance(value, kinds) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        kind = "positive integer" if integer else "positive finite number"
        raise ConfigError(f"{name} must be a {kind}, got {value!r}.")
