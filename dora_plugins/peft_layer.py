"""Our DoRA computation, wired into PEFT's LoRA layer.

Every use of private or experimental PEFT API lives here: ``LoraVariant``, ``lora.Linear``'s
``lora_variants`` table and ``_unmerged_base_weight``, and ``LoraConfig._register_custom_module``
(done by :class:`dora_plugins.config.DoraConfig`). pyproject pins the PEFT range this was
tested with.

Parameter names stay PEFT's (``lora_A``, ``lora_B``, ``lora_magnitude_vector.<adapter>.weight``),
so checkpoints are interchangeable with ``LoraConfig(use_dora=True)``.
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F
from peft import LoraConfig
from peft.tuners.lora import layer as lora_layer
from torch import nn

from . import dora, kernels


def _version_key(*tensors: torch.Tensor) -> tuple:
    """Changes whenever any tensor is replaced or modified in place (optimizer step, load, merge)."""
    return tuple((t.data_ptr(), t._version) for t in tensors)


class DoraMagnitude(nn.Module):
    """The trainable magnitude ``m`` (out,) and the caches that make the norm cheap.

    Stored as ``lora_magnitude_vector[adapter].weight``, PEFT's name: TRL keeps parameters with
    that name in fp32 for k-bit training.
    """

    def __init__(self, magnitude: torch.Tensor, detach_norm: bool):
        super().__init__()
        self.weight = nn.Parameter(magnitude, requires_grad=True)
        self.detach_norm = detach_norm
        self._weight_sq: tuple[tuple, torch.Tensor] | None = None
        self._norm: tuple[tuple, torch.Tensor] | None = None
        self._factors: tuple[tuple, tuple] | None = None

    def weight_sq(self, weight: torch.Tensor) -> torch.Tensor:
        key = _version_key(weight)
        if self._weight_sq is None or self._weight_sq[0] != key:
            self._weight_sq = (key, dora.base_row_norm_sq(weight))
        return self._weight_sq[1]

    def norm(self, weight: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float):
        """``||W0 + s*B@A||_row`` (out,) in fp32; cached in eval mode until a weight changes."""
        # A norm that carries a graph cannot be reused across backward passes.
        cacheable = not self.training and (self.detach_norm or not torch.is_grad_enabled())
        key = (_version_key(weight, lora_A, lora_B), scaling)
        if cacheable and self._norm is not None and self._norm[0] == key:
            return self._norm[1]
        weight_sq = self.weight_sq(weight)
        if self.detach_norm:
            with torch.no_grad():
                norm = dora.weight_norm(weight, lora_A, lora_B, scaling, weight_sq)
        else:
            norm = dora.weight_norm(weight, lora_A, lora_B, scaling, weight_sq)
        self._norm = (key, norm) if cacheable else None
        return norm

    def inference_factors(self, base: nn.Linear, lora_A, lora_B, scaling: float, dtype: torch.dtype) -> tuple:
        """:func:`dora_plugins.kernels.scale_factors` for eval mode without grad, cached until a weight changes."""
        tensors = (base.weight, lora_A, lora_B, self.weight) + (() if base.bias is None else (base.bias,))
        key = (_version_key(*tensors), scaling, dtype)
        if self._factors is None or self._factors[0] != key:
            g = self.weight / self.norm(base.weight, lora_A, lora_B, scaling)  # (out,)
            self._factors = (key, kernels.scale_factors(lora_B, scaling, g, base.bias, dtype))
        return self._factors[1]

    def train(self, mode: bool = True):
        self._norm = self._factors = None
        return super().train(mode)

    def extra_repr(self) -> str:
        return f"out={self.weight.shape[0]}, detach_norm={self.detach_norm}"


class DoraVariant(lora_layer.LoraVariant):
    """PEFT's variant interface, answered with :mod:`dora_plugins.dora`."""

    @staticmethod
    def init(module: lora_layer.Linear, adapter_name: str, config=None, **kwargs) -> None:
        if "lora_magnitude_vector" not in module.adapter_layer_names:
            module.adapter_layer_names = module.adapter_layer_names[:] + ("lora_magnitude_vector",)
        weight = module.get_base_layer().weight
        lora_A = module.lora_A[adapter_name].weight
        lora_B = module.lora_B[adapter_name].weight
        weight_sq = dora.base_row_norm_sq(weight)
        with torch.no_grad():
            magnitude = dora.weight_norm(weight, lora_A, lora_B, module.scaling[adapter_name], weight_sq)
        detach_norm = getattr(config, "detach_norm", True)
        module.lora_magnitude_vector[adapter_name] = DoraMagnitude(magnitude.to(lora_A.dtype), detach_norm)

    @staticmethod
    def _parts(module: lora_layer.Linear, adapter: str, weight: torch.Tensor):
        lora_A = module.lora_A[adapter].weight
        lora_B = module.lora_B[adapter].weight
        scaling = module.scaling[adapter]
        magnitude = module.lora_magnitude_vector[adapter]
        norm = magnitude.norm(weight, lora_A, lora_B, scaling).detach()
        return lora_A, lora_B, scaling, magnitude.weight, norm

    @staticmethod
    def merge_safe(module: lora_layer.Linear, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
        # The norm comes from the weight as forward sees it, without previously merged adapters.
        with module._unmerged_base_weight(safe_merge=True) as base_weight:
            lora_A, lora_B, scaling, magnitude, norm = DoraVariant._parts(module, active_adapter, base_weight)
        module._cache_store(f"{active_adapter}-weight_norm", norm)
        return dora.merged_weight(module.get_base_layer().weight.data, lora_A, lora_B, scaling, magnitude, norm)

    @staticmethod
    def merge_unsafe(module: lora_layer.Linear, active_adapter: str, orig_weight: torch.Tensor) -> None:
        orig_weight.data = DoraVariant.merge_safe(module, active_adapter, orig_weight)

    @staticmethod
    def unmerge(module: lora_layer.Linear, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
        norm = module._cache_pop(f"{active_adapter}-weight_norm")
        lora_A = module.lora_A[active_adapter].weight
        lora_B = module.lora_B[active_adapter].weight
        magnitude = module.lora_magnitude_vector[active_adapter].weight
        scaling = module.scaling[active_adapter]
        return dora.unmerged_weight(orig_weight.data, lora_A, lora_B, scaling, magnitude, norm)

    @staticmethod
    def forward(module: lora_layer.Linear, active_adapter: str, x: torch.Tensor, result: torch.Tensor, **kwargs):
        base = module.get_base_layer()
        lora_A = module.lora_A[active_adapter].weight
        lora_B = module.lora_B[active_adapter].weight
        scaling = module.scaling[active_adapter]
        magnitude = module.lora_magnitude_vector[active_adapter]
        if not module.training and not torch.is_grad_enabled():  # inference: every factor is cached
            factors = magnitude.inference_factors(base, lora_A, lora_B, scaling, lora_A.dtype)
            return kernels.scaled_output(result, F.linear(x, lora_A), *factors)
        dropout = module.lora_dropout[active_adapter]
        active_dropout = None if isinstance(dropout, nn.Identity) or not module.training else dropout
        return dora.dora_forward(
            x,
            result,
            weight=base.weight,
            bias=base.bias,
            lora_A=lora_A,
            lora_B=lora_B,
            scaling=scaling,
            magnitude=magnitude.weight,
            norm=magnitude.norm(base.weight, lora_A, lora_B, scaling),
            dropout=active_dropout,
        )


class DoraLinear(lora_layer.Linear):
    """PEFT's LoRA ``Linear`` whose ``use_dora`` variant is ours instead of ``DoraLinearVariant``."""

    @property
    def lora_variants(self):
        return {**super().lora_variants, ("use_dora",): DoraVariant}


CUSTOM_MODULES = {nn.Linear: DoraLinear}


logger = logging.getLogger("dora_plugins")
_routing = {"enabled": False}


def route_peft(enable: bool = True) -> None:
    """Make every ``peft.LoraConfig(use_dora=True)`` created from now on use our layer, as ``DoraConfig`` does.

    Layers our layer does not support keep PEFT's own DoRA. ``route_peft(False)`` stops routing configs
    created afterwards.
    """
    if not getattr(LoraConfig.__post_init__, "_dora_plugins_routed", False):
        LoraConfig.__post_init__ = _routed(LoraConfig.__post_init__)
    if enable and not _routing["enabled"]:
        logger.info("dora-plugins: LoraConfig(use_dora=True) now uses dora-plugins' DoRA layer")
    _routing["enabled"] = enable


def _routed(post_init):
    @functools.wraps(post_init)
    def __post_init__(self, *args, **kwargs):
        post_init(self, *args, **kwargs)
        if _routing["enabled"] and self.use_dora:
            self._register_custom_module(CUSTOM_MODULES)

    __post_init__._dora_plugins_routed = True
    return __post_init__
