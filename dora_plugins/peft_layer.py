"""Our DoRA computation, wired into PEFT's LoRA layer.

Every use of private or experimental PEFT API lives here: ``LoraVariant``, ``lora.Linear``'s
``lora_variants`` table and ``_unmerged_base_weight``, the bitsandbytes LoRA layers'
``resolve_lora_variant``, ``gather_params_ctx``, PEFT's dequantization helpers, and
``LoraConfig._register_custom_module`` (done by :class:`dora_plugins.config.DoraConfig` and by
:func:`route_peft`). pyproject pins the PEFT range this was tested with.

Quantized bases (bitsandbytes 4-bit and 8-bit, QDoRA) run the same computation on the dequantized
weight, as PEFT's DoRA does; other quantized layers keep PEFT's own DoRA.

Parameter names stay PEFT's (``lora_A``, ``lora_B``, ``lora_magnitude_vector.<adapter>.weight``),
so checkpoints are interchangeable with ``LoraConfig(use_dora=True)``.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, cast

import torch
import torch.nn.functional as F
from peft import LoraConfig
from peft.tuners.lora import layer as lora_layer
from peft.utils.integrations import dequantize_bnb_weight, gather_params_ctx
from torch import nn

from . import dora, inference, kernels
from .errors import ConfigError

logger = logging.getLogger("dora_plugins")
_announced: set[str] = set()  # adapter names whose layer was named in the log, once per process


def base_weight(base: nn.Module) -> torch.Tensor:
    """The base layer's weight as a float tensor: the weight itself, or its dequantized copy for bitsandbytes.

    Not PEFT's ``dequantize_module_weight``: for 8-bit weights it reassigns ``weight.to(device)``, which on the
    CPU resets the layer's quantization state, so that its next forward fails; and its type checks break a
    ``torch.compile`` graph.
    """
    weight = cast(nn.Parameter, base.weight)  # nn.Module.__getattr__ types it Tensor | Module
    kind = type(weight).__name__
    if kind == "Int8Params":
        return dequantize_bnb_weight(weight, state=base.state)
    if kind == "Params4bit":
        return dequantize_bnb_weight(weight)
    return weight


class DoraMagnitude(nn.Module):
    """The trainable magnitude ``m`` (out,), and how this adapter computes with it.

    Stored as ``lora_magnitude_vector[adapter].weight``, PEFT's name: TRL keeps parameters with
    that name in fp32 for k-bit training. It caches nothing (see :mod:`dora_plugins.inference`).
    ``magnitude_only``: the module computes ``W' = m * W0 / ||W0||`` (see :mod:`dora_plugins.magnitude_only`).
    """

    def __init__(
        self, magnitude: torch.Tensor, detach_norm: bool = True, dropout_mode: str = "paper", magnitude_only=False
    ):
        super().__init__()
        self.weight = nn.Parameter(magnitude, requires_grad=True)
        self.detach_norm = detach_norm
        self.dropout_mode = dropout_mode
        self.magnitude_only = magnitude_only

    def extra_repr(self) -> str:
        only = ", magnitude_only=True" if self.magnitude_only else ""
        return f"out={self.weight.shape[0]}, detach_norm={self.detach_norm}, dropout_mode={self.dropout_mode!r}{only}"


class DoraVariant(lora_layer.LoraVariant):
    """PEFT's variant interface, answered with :mod:`dora_plugins.dora`."""

    # The methods below take lora.Linear, PEFT's LoraVariant declares LoraLayer: this variant is only registered
    # for lora.Linear and its bitsandbytes subclasses, whose attributes it reads.
    @staticmethod
    def init(  # type: ignore[override]
        module: lora_layer.Linear, adapter_name: str, config: LoraConfig | None = None, **kwargs: Any
    ) -> None:
        if "lora_magnitude_vector" not in module.adapter_layer_names:
            module.adapter_layer_names = module.adapter_layer_names[:] + ("lora_magnitude_vector",)
        base = module.get_base_layer()
        magnitude_only = getattr(config, "is_magnitude_only", lambda name: False)(kwargs.get("target_name", ""))
        if magnitude_only:
            _freeze_factors(module, adapter_name)
        lora_A, lora_B, scaling = DoraVariant._direction(module, adapter_name, magnitude_only)
        if lora_A.is_meta or base.weight.is_meta:  # low_cpu_mem_usage: the values arrive with the state dict
            magnitude = torch.empty(lora_B.shape[0], dtype=lora_A.dtype, device="meta")
        else:
            with gather_params_ctx(base.parameters()):  # DeepSpeed ZeRO-3 shards the base weight
                weight = base_weight(base)
                magnitude = dora.weight_norm(weight, lora_A, lora_B, scaling).to(lora_A.dtype)
        module.lora_magnitude_vector[adapter_name] = DoraMagnitude(
            magnitude, getattr(config, "detach_norm", True), getattr(config, "dropout_mode", "paper"), magnitude_only
        )
        inference.install_generate_hook()
        if adapter_name not in _announced:
            _announced.add(adapter_name)
            logger.info("DoRA adapter '%s' runs on dora-plugins' layer", adapter_name)

    @staticmethod
    def _factors(module: lora_layer.Linear, adapter: str) -> tuple[torch.Tensor, torch.Tensor, float]:
        return DoraVariant._direction(module, adapter, DoraVariant._magnitude(module, adapter).magnitude_only)

    @staticmethod
    def _direction(
        module: lora_layer.Linear, adapter: str, magnitude_only: bool
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """``A`` (r, in), ``B`` (out, r) and the scaling that the DoRA math uses.

        A magnitude-only module is DoRA with a direction update of rank 0: the same math, on empty factors
        (``||W0 + s B A|| = ||W0||``, ``g * (W0 x) + bias``, merge ``g * W0``); its saved factors are never read.
        """
        # nn.Module.__getattr__ types every submodule attribute Tensor | Module: the casts live here only.
        lora_A = cast(torch.Tensor, module.lora_A[adapter].weight)
        lora_B = cast(torch.Tensor, module.lora_B[adapter].weight)
        if magnitude_only:  # only the dtype and device of the saved factors: x arrives in that dtype
            lora_A, lora_B = lora_A.new_empty(0, lora_A.shape[1]), lora_B.new_empty(lora_B.shape[0], 0)
        return lora_A, lora_B, module.scaling[adapter]

    @staticmethod
    def _magnitude(module: lora_layer.Linear, adapter: str) -> DoraMagnitude:
        return cast(DoraMagnitude, module.lora_magnitude_vector[adapter])

    @staticmethod
    def _bias(module: lora_layer.Linear) -> torch.Tensor | None:
        return cast("torch.Tensor | None", module.get_base_layer().bias)

    @staticmethod
    def _norm(module: lora_layer.Linear, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float) -> torch.Tensor:
        return dora.weight_norm(base_weight(module.get_base_layer()), lora_A, lora_B, scaling)

    @staticmethod
    def merge_safe(  # type: ignore[override]
        module: lora_layer.Linear, active_adapter: str, orig_weight: torch.Tensor
    ) -> torch.Tensor:
        lora_A, lora_B, scaling = DoraVariant._factors(module, active_adapter)
        # The norm comes from the weight as forward sees it, without previously merged adapters.
        with module._unmerged_base_weight(safe_merge=True) as unmerged:
            norm = dora.weight_norm(unmerged, lora_A, lora_B, scaling)
        module._cache_store(f"{active_adapter}-weight_norm", norm)
        magnitude = DoraVariant._magnitude(module, active_adapter).weight
        # Merged from the weight as it is now: replaying earlier merges rebuilt it, not bit for bit in low precision.
        weight = base_weight(module.get_base_layer()).detach()
        return dora.merged_weight(weight, lora_A, lora_B, scaling, magnitude, norm)

    @staticmethod
    def merge_unsafe(  # type: ignore[override]
        module: lora_layer.Linear, active_adapter: str, orig_weight: torch.Tensor
    ) -> None:
        orig_weight.data = DoraVariant.merge_safe(module, active_adapter, orig_weight)

    @staticmethod
    def unmerge(  # type: ignore[override]
        module: lora_layer.Linear, active_adapter: str, orig_weight: torch.Tensor
    ) -> torch.Tensor:
        norm = module._cache_pop(f"{active_adapter}-weight_norm")
        lora_A, lora_B, scaling = DoraVariant._factors(module, active_adapter)
        magnitude = DoraVariant._magnitude(module, active_adapter).weight
        return dora.unmerged_weight(orig_weight.data, lora_A, lora_B, scaling, magnitude, norm)

    @staticmethod
    def forward(  # type: ignore[override]
        module: lora_layer.Linear,
        active_adapter: str,
        x: torch.Tensor,
        result: torch.Tensor,
        norm: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """``result`` is the base layer's output; ``norm`` the weight norm when the caller has it (training only)."""
        base = module.get_base_layer()
        lora_A, lora_B, scaling = DoraVariant._factors(module, active_adapter)
        magnitude = DoraVariant._magnitude(module, active_adapter)
        if not module.training and not torch.is_grad_enabled():  # inference: g, s g B and (1 - g) bias
            factors = inference.cached(
                magnitude,
                (scaling, lora_A.dtype),
                lambda: kernels.scale_factors(
                    lora_B, scaling, magnitude.weight / DoraVariant._norm(module, lora_A, lora_B, scaling),
                    DoraVariant._bias(module), lora_A.dtype,
                ),
            )  # fmt: skip
            return kernels.scaled_output(result, F.linear(x, lora_A), *factors)
        dropout = module.lora_dropout[active_adapter]
        unused = magnitude.magnitude_only and magnitude.dropout_mode == "lora_branch"  # no LoRA branch to drop
        active_dropout = None if isinstance(dropout, nn.Identity) or not module.training or unused else dropout
        weight = base_weight(base)
        return dora.dora_forward(
            x,
            result,
            weight=weight,
            bias=DoraVariant._bias(module),
            lora_A=lora_A,
            lora_B=lora_B,
            scaling=scaling,
            magnitude=magnitude.weight,
            norm=dora.weight_norm(weight, lora_A, lora_B, scaling, detach=magnitude.detach_norm)
            if norm is None
            else norm,
            dropout=active_dropout,
            dropout_mode=magnitude.dropout_mode,
        )

    @staticmethod
    def forward_with_norm(module: lora_layer.Linear, adapter: str, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` of the whole layer, base product included, where :func:`_shared_product_adapter` allows:
        ``[x; A] W0^T`` gives ``W0 x`` and the norm's ``A W0^T`` in one product (:class:`kernels.BaseProduct`)."""
        weight = cast(torch.Tensor, module.get_base_layer().weight)
        lora_A, lora_B, scaling = DoraVariant._factors(module, adapter)
        result, weight_a = kernels.BaseProduct.apply(x, weight, DoraVariant._bias(module), lora_A.detach())
        with torch.no_grad():
            norm = dora.factored_row_norms(weight, lora_A.detach(), lora_B.detach(), scaling, weight_a)
        return DoraVariant.forward(module, adapter, x, result, norm=norm)


def _freeze_factors(module: lora_layer.Linear, adapter: str) -> None:
    """Turn a magnitude-only module's factors into zero buffers.

    They keep PEFT's names and shapes, so the adapter saves and loads as plain DoRA (stock PEFT reads B = 0,
    hence the same function; with A = 0 too, training it there leaves them 0). As buffers, whatever
    ``requires_grad_`` or PEFT's ``set_adapter`` does, they are not trainable parameters: no optimizer state, no
    count in the trainable parameters, and no unused parameter for DistributedDataParallel to wait for.
    """
    device = cast(
        torch.Tensor, module.get_base_layer().weight
    ).device  # never meta beside a real base: their values are known
    for factor in (module.lora_A[adapter], module.lora_B[adapter]):
        weight = cast(torch.Tensor, factor.weight)
        zeros = torch.zeros(weight.shape, dtype=weight.dtype, device=device)
        del factor.weight
        factor.register_buffer("weight", zeros)


class DoraLinear(lora_layer.Linear):
    """PEFT's LoRA ``Linear`` whose ``use_dora`` variant is ours instead of ``DoraLinearVariant``.

    In training on the CPU in float32 or float64, one DoRA adapter active and a large plain frozen ``nn.Linear``
    base without hooks (:func:`_shared_product_adapter`), the base layer's product also gives the norm's ``A W0^T``
    (:meth:`DoraVariant.forward_with_norm`); everything else is PEFT's ``forward``.
    """

    @property
    def lora_variants(self):
        return {**super().lora_variants, ("use_dora",): DoraVariant}

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        adapter = None if args or kwargs else _shared_product_adapter(self, x)
        if adapter is None:
            return super().forward(x, *args, **kwargs)
        return DoraVariant.forward_with_norm(self, adapter, x)


_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_GLOBAL_HOOKS = tuple(f"_global{name}" for name in _HOOKS)


def _shared_product_adapter(module: DoraLinear, x: torch.Tensor) -> str | None:
    """The adapter whose forward can take ``A W0^T`` from the base layer's product, or None (PEFT's path).

    Worth it for weights of at least ``dora.SHARED_PRODUCT_ELEMENTS``, which the blockwise norm would read from
    memory a second time; below, the blockwise norm is faster.

    The base's forward is then not called, so it must be exactly ``F.linear`` on a frozen weight, with no hook
    (accelerate's offloading, DeepSpeed's gathering, a user's) that it would skip. Only on the CPU in float32 or
    float64 (the norm's sums need float32 at least; bf16 and autocast keep the blockwise norm, and so do CUDA,
    whose eager path is unmeasured, and compiled graphs).
    """
    if torch.compiler.is_compiling() or not (module.training and torch.is_grad_enabled()):
        return None
    if module.disable_adapters or module.merged or len(module.active_adapters) != 1:
        return None
    adapter = module.active_adapters[0]
    if adapter not in module.lora_A.keys() or not isinstance(module.lora_variant.get(adapter), DoraVariant):
        return None
    magnitude = DoraVariant._magnitude(module, adapter)
    dropout = module.lora_dropout[adapter]
    if magnitude.magnitude_only or not magnitude.detach_norm:
        return None
    if not (isinstance(dropout, nn.Identity) or magnitude.dropout_mode == "lora_branch"):
        return None
    base = module.get_base_layer()
    if type(base) is not nn.Linear or "forward" in vars(base) or any(getattr(base, name) for name in _HOOKS):
        return None
    if any(getattr(nn.modules.module, name) for name in _GLOBAL_HOOKS):
        return None
    weight, lora_A = cast(torch.Tensor, base.weight), cast(torch.Tensor, module.lora_A[adapter].weight)
    if type(weight) is not nn.Parameter or weight.requires_grad or x.device.type != "cpu":
        return None
    if weight.numel() < dora.SHARED_PRODUCT_ELEMENTS:  # a weight the cache keeps: the blockwise norm is faster
        return None
    if x.dtype not in (torch.float32, torch.float64) or torch.is_autocast_enabled("cpu"):
        return None
    return adapter if x.dtype == weight.dtype == lora_A.dtype == module.lora_B[adapter].weight.dtype else None


class _PlainLinearMeta(type):
    def __instancecheck__(cls, layer) -> bool:
        return isinstance(layer, nn.Linear) and type(layer.weight) in (nn.Parameter, torch.Tensor)


class PlainLinear(metaclass=_PlainLinearMeta):
    """Matches ``nn.Linear`` layers with ordinary weights in PEFT's ``isinstance`` dispatch, and nothing else.

    Quantized layers (bitsandbytes' ``Linear4bit``/``Linear8bitLt``, torchao) subclass ``nn.Linear`` but keep
    packed weights in a tensor subclass: bitsandbytes' get their own entries below, the others fall through to
    PEFT's own dispatch and its DoRA variant.
    """


class _Bitsandbytes4bitMeta(type):
    def __instancecheck__(cls, layer) -> bool:
        return _is_bnb(layer, "Linear4bit")


class _Bitsandbytes8bitMeta(type):
    def __instancecheck__(cls, layer) -> bool:
        return _is_bnb(layer, "Linear8bitLt")


def _is_bnb(layer, name: str) -> bool:
    """Whether ``layer`` is bitsandbytes' layer called ``name``, without importing bitsandbytes."""
    return any(c.__name__ == name and c.__module__.startswith("bitsandbytes") for c in type(layer).__mro__)


class Bitsandbytes4bit(metaclass=_Bitsandbytes4bitMeta):
    """Matches bitsandbytes' ``Linear4bit`` in PEFT's dispatch (checked by name: bitsandbytes stays unimported)."""


class Bitsandbytes8bit(metaclass=_Bitsandbytes8bitMeta):
    """Matches bitsandbytes' ``Linear8bitLt`` in PEFT's dispatch."""


@functools.cache
def _with_our_variant(peft_cls: type) -> type:
    """A subclass of PEFT's bitsandbytes LoRA layer whose DoRA variant is ours.

    PEFT's bitsandbytes layers do not pass the module's name on to ``update_layer``, where our variant needs it
    (magnitude-only modules): the subclass keeps it from construction.
    """

    def __init__(self, base_layer, adapter_name: str, config, **kwargs):
        self._dora_target_name = kwargs.get("target_name", "")  # a str: allowed before nn.Module.__init__
        peft_cls.__init__(self, base_layer, adapter_name, config=config, **kwargs)  # type: ignore[misc]

    def update_layer(self, adapter_name: str, r: int, lora_alpha, config, **kwargs):
        kwargs.setdefault("target_name", self._dora_target_name)
        return peft_cls.update_layer(self, adapter_name, r, lora_alpha, config=config, **kwargs)  # type: ignore[attr-defined]

    def resolve_lora_variant(self, *, config, **kwargs):
        variant = peft_cls.resolve_lora_variant(self, config=config, **kwargs)
        return DoraVariant() if type(variant).__name__ == "DoraLinearVariant" else variant

    methods = {"__init__": __init__, "update_layer": update_layer, "resolve_lora_variant": resolve_lora_variant}
    return type(f"Dora{peft_cls.__name__}", (peft_cls,), methods)


def dora_linear_4bit(target, adapter_name: str, **kwargs):
    """PEFT's 4-bit LoRA layer (QDoRA) with our variant; imports bitsandbytes only when a 4-bit layer exists."""
    from peft.tuners.lora import bnb as lora_bnb

    keep_4bit_layout_readable(target)
    return _with_our_variant(lora_bnb.Linear4bit)(target, adapter_name, **kwargs)


def keep_4bit_layout_readable(base: nn.Module) -> None:
    """Keeps a bitsandbytes ``Linear4bit`` weight in the layout that ``dequantize_4bit`` reads.

    bitsandbytes >= 0.49, on a CPU with AVX512-BF16, repacks the weight in place at the layer's first eval
    forward without grad (a kernel layout, block scales transposed to bf16: ``quant_state.packing_format_for_cpu``).
    ``dequantize_4bit``, through which PEFT's DoRA, its 4-bit merge and our layer read the weight, ignores that
    layout and returns scrambled values: the weight norm and a merge would be wrong (merged vs unmerged logits
    0.49-0.69 apart instead of the 0.13 of re-quantization). So the layers we wrap are never repacked, and one
    repacked before it was wrapped is unpacked (its block scales keep their bf16 rounding).
    """
    setattr(base, "support_avx512bf16_for_cpu", False)  # noqa: B010 (read by Linear4bit.forward before it repacks)
    weight = cast(nn.Parameter, base.weight)
    state: Any = getattr(weight, "quant_state", None)
    if not getattr(state, "packing_format_for_cpu", False):
        return
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

    scales = state.absmax  # (in / blocksize, out) in bf16
    nested = state.original_nested
    weight.data, state = _convert_weight_packed_for_cpu_inverse(weight.data, state)
    if not nested:  # the inverse re-orders nested scales only
        state.absmax = scales.T.reshape(-1).float()
    weight.quant_state = state  # type: ignore[attr-defined]


def dora_linear_8bit(target, adapter_name: str, **kwargs):
    """PEFT's 8-bit LoRA layer with our variant."""
    from peft.tuners.lora import bnb as lora_bnb

    return _with_our_variant(lora_bnb.Linear8bitLt)(target, adapter_name, **kwargs)


class _AnyLayerMeta(type):
    def __instancecheck__(cls, layer) -> bool:
        return True


class OtherLayer(metaclass=_AnyLayerMeta):
    """Matches any layer that the entries before it in :data:`CUSTOM_MODULES` do not."""


def refuse_magnitude_only(target, adapter_name: str, config=None, **kwargs) -> None:
    """``None`` (PEFT's own dispatch and DoRA take the layer), or a ``ConfigError`` for a magnitude-only module:
    PEFT's DoRA would train its factors."""
    name = kwargs.get("target_name", "")
    if getattr(config, "is_magnitude_only", lambda name: False)(name):
        raise ConfigError(
            f"Module '{name}' ({type(target).__name__}) cannot be magnitude-only: dora-plugins runs magnitude-only "
            "modules on nn.Linear layers, plain or bitsandbytes 4-bit/8-bit. Remove it from magnitude_only_modules."
        )


CUSTOM_MODULES = {
    PlainLinear: DoraLinear,
    Bitsandbytes4bit: dora_linear_4bit,
    Bitsandbytes8bit: dora_linear_8bit,
    OtherLayer: refuse_magnitude_only,  # last: PEFT tries the entries in order
}
_routing = {"enabled": False}


def route_peft(enable: bool = True) -> None:
    """Make every ``peft.LoraConfig(use_dora=True)`` created from now on use our layer, as ``DoraConfig`` does.

    Layers our layer does not support keep PEFT's own DoRA. ``route_peft(False)`` stops routing configs
    created afterwards.
    """
    if not getattr(LoraConfig.__post_init__, "_dora_plugins_routed", False):
        # Patched on the class, so that configs built by PEFT, TRL and lm-eval route too.
        LoraConfig.__post_init__ = _routed(LoraConfig.__post_init__)  # type: ignore[method-assign]
    if enable and not _routing["enabled"]:
        logger.info("LoraConfig(use_dora=True) runs dora-plugins' DoRA layer (DORA_PLUGINS_ROUTE=0: PEFT's own)")
    _routing["enabled"] = enable


def _routed(post_init):
    @functools.wraps(post_init)
    def __post_init__(self, *args, **kwargs):
        post_init(self, *args, **kwargs)
        if _routing["enabled"] and self.use_dora:
            self._register_custom_module(CUSTOM_MODULES)

    __post_init__._dora_plugins_routed = True
    return __post_init__
