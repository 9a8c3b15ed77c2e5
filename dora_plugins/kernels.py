"""DoRA layer outputs as custom autograd Functions: the exact math of :mod:`dora_plugins.dora`, fewer saved tensors.

With ``g = m / norm`` (out,), ``h = A x`` (tokens, r) and ``inner = W0 x + s B h`` (tokens, out), the magnitude
gradient ``dL/dg_j = sum_t dL/dy_tj * inner_tj`` is the only thing that needs a (tokens, out) activation beyond
LoRA's. Plain autograd keeps extra copies of it; these Functions keep at most one, and often none:

- :class:`ScaledOutput`, no active dropout (or dropout on the LoRA branch only):
  ``y = g * (result - bias) + h (s g B)^T + bias`` with ``result = W0 x + bias`` reused. For a layer without
  bias in fp32 or bf16 it saves the OUTPUT ``y`` and recovers ``inner = y / g`` in backward, exact to rounding
  at any magnitude; layers whose output the model saves anyway (``v_proj`` for attention, ``up_proj`` for
  ``act(gate) * up``) then cost no activation memory beyond LoRA's, because autograd shares the storage.
  With a bias (``(y - bias) / g`` would cancel where ``g`` is small) or in fp16 (whose range is too short),
  it saves ``inner`` itself. The choice depends only on the layer, never on values, so it compiles without
  a graph break.
- :class:`DropoutOutput`, the paper's dropout (``drop(x) = x * noise``):
  ``y = result + (g - 1) * W0 drop(x) + g * s * B A drop(x)``. It saves the layer input ``x`` (shared by every
  adapter on that input), the dropout mask as booleans, ``h`` and ``W0 drop(x)``; ``drop(x)`` is rebuilt in
  backward. The LoRA part of ``dL/dg`` comes from ``dL/dy^T h``, which the gradient of B needs anyway.

Both return the gradient of the norm too, so ``detach_norm=False`` (norm with a graph) works unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

# Where a magnitude is exactly 0 the saved output is 0 and cannot give back ``inner``; g takes this value
# instead (an output change of 5e-20 x inner), so the output stays invertible and the gradient exact.
ZERO_G = 2.0**-64
_KEEPS_OUTPUT = (torch.float32, torch.bfloat16, torch.float64)


def keeps_output(bias: torch.Tensor | None, dtype: torch.dtype) -> bool:
    """Whether :class:`ScaledOutput` saves the output ``y`` (else ``inner``): no bias, and a wide exponent range."""
    return bias is None and dtype in _KEEPS_OUTPUT


def scale_factors(
    lora_B: torch.Tensor, scaling: float, g: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The constants of the no-dropout output in ``dtype``: ``g`` (out,), ``s g B`` (out, r), ``(1 - g) bias``."""
    scaled_B = (lora_B * (scaling * g).unsqueeze(1)).to(dtype)  # (out, r)
    bias_term = None if bias is None else (bias * (1 - g)).to(dtype)  # (out,)
    return g.to(dtype), scaled_B, bias_term


def scaled_output(
    result: torch.Tensor, h: torch.Tensor, g: torch.Tensor, scaled_B: torch.Tensor, bias_term: torch.Tensor | None
) -> torch.Tensor:
    """``g * (result - bias) + h (s g B)^T + bias`` from :func:`scale_factors`, returned in ``result``'s dtype."""
    y = F.linear(h, scaled_B, bias_term)  # (..., out): h (s g B)^T + (1 - g) bias
    return y.addcmul_(result, g).to(result.dtype)


def dropout_output(
    x_d: torch.Tensor,
    result: torch.Tensor,
    lora_A: torch.Tensor,
    lora_B: torch.Tensor,
    scaling: float,
    g: torch.Tensor,
    weight: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``result + (g - 1) * W0 x_d + g * s * B A x_d`` and the saved parts ``h = A x_d``, ``W0 x_d``.

    The sums run in the dtype of the two matrix products (autocast's, under autocast; else the input's).
    """
    flat = x_d.reshape(-1, x_d.shape[-1])  # (tokens, in)
    h = flat @ lora_A.t()  # (tokens, r)
    base_d = flat @ weight.to(x_d.dtype).t()  # (tokens, out)
    dtype = h.dtype
    y = torch.addcmul(result.reshape(base_d.shape).to(dtype), base_d.to(dtype), (g - 1).to(dtype))
    y.addmm_(h, (lora_B * (scaling * g).unsqueeze(1)).to(dtype).t())
    return y.view(result.shape).to(result.dtype), h, base_d


def _rows(h: torch.Tensor) -> torch.Tensor:
    """``h`` as (tokens, r), also for r = 0 (a magnitude-only module), where ``reshape(-1, 0)`` is ambiguous."""
    return h.reshape(h.shape[:-1].numel(), h.shape[-1])


def _magnitude_grads(
    ctx: Any, grad_g: torch.Tensor, g: torch.Tensor, norm: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``dL/dm = dL/dg / norm`` and ``dL/dnorm = -dL/dg * g / norm`` where requested, else None."""
    grad_m = grad_g / norm if ctx.needs_input_grad[ctx.m_index] else None
    grad_norm = -grad_g * g / norm if ctx.needs_input_grad[ctx.m_index + 1] else None
    return grad_m, grad_norm


class BaseProduct(torch.autograd.Function):
    """``W0 x + bias`` and ``A W0^T`` (r, out) from one matrix product ``[x; A] W0^T``, for a frozen ``W0``.

    The norm needs ``A W0^T`` at every forward (:func:`dora_plugins.dora.factored_row_norms`); as r more rows of
    the base layer's own product it runs at that product's speed and reads ``W0`` once, where a product of its
    own (inner dimension r or ``in``, only r columns wide) runs well below it. ``A W0^T`` has no gradient; the
    input gradient is the base layer's, ``dL/dy W0``.
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, lora_A: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.reshape(-1, x.shape[-1])  # (tokens, in)
        both = torch.cat([flat, lora_A.to(x.dtype)]) @ weight.t()  # (tokens + r, out)
        result, weight_a = both[: flat.shape[0]], both[flat.shape[0] :]
        if bias is not None:
            result.add_(bias)
        ctx.mark_non_differentiable(weight_a)
        ctx.save_for_backward(weight)
        ctx.has_bias = bias is not None
        return result.view(*x.shape[:-1], weight.shape[0]), weight_a

    @staticmethod
    def backward(ctx: Any, grad_result: torch.Tensor, grad_weight_a: torch.Tensor | None) -> tuple:
        (weight,) = ctx.saved_tensors
        gy = grad_result.reshape(-1, grad_result.shape[-1])  # (tokens, out)
        grad_x = (gy @ weight).view(*grad_result.shape[:-1], weight.shape[1]) if ctx.needs_input_grad[0] else None
        grad_bias = gy.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, None, grad_bias, None


class ScaledOutput(torch.autograd.Function):
    """Output of a DoRA layer without dropout on the base path, given ``result = W0 x + bias`` and ``h = A x``."""

    @staticmethod
    def forward(
        ctx: Any,
        result: torch.Tensor,
        h: torch.Tensor,
        lora_B: torch.Tensor,
        magnitude: torch.Tensor,
        norm: torch.Tensor,
        scaling: float,
        bias: torch.Tensor | None,
    ) -> torch.Tensor:
        g = magnitude / norm  # (out,) fp32
        ctx.keep_output = keeps_output(bias, result.dtype)
        if ctx.keep_output:
            g = torch.where(g == 0, ZERO_G, g)
        y = scaled_output(result, h, *scale_factors(lora_B, scaling, g, bias, h.dtype))
        ctx.scaling, ctx.m_index = scaling, 3
        ctx.need_g = ctx.needs_input_grad[3] or ctx.needs_input_grad[4]
        if not ctx.need_g:
            saved = None
        elif ctx.keep_output:
            saved = y  # shared with whatever the model saves of y
        else:  # inner = (result - bias) + s B h, exact where (y - bias) / g would not be
            base = (result if bias is None else result - bias).reshape(-1, result.shape[-1])  # (tokens, out)
            saved = torch.addmm(base.to(h.dtype), _rows(h), scaling * lora_B.t().to(h.dtype))
        ctx.save_for_backward(h, lora_B, g, norm, saved)
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        h, lora_B, g, norm, saved = ctx.saved_tensors
        s = ctx.scaling
        dtype = h.dtype
        gy = grad_y.reshape(-1, grad_y.shape[-1])  # (tokens, out)
        gyc = gy.to(dtype)
        h2 = _rows(h)  # (tokens, r)
        grad_result = grad_y * g.to(grad_y.dtype) if ctx.needs_input_grad[0] else None
        grad_h = (gyc @ (lora_B * (s * g).unsqueeze(1)).to(dtype)).view(h.shape) if ctx.needs_input_grad[1] else None
        grad_B = grad_m = grad_norm = None
        if ctx.needs_input_grad[2]:
            grad_B = ((gyc.t() @ h2) * (s * g).unsqueeze(1).to(dtype)).to(lora_B.dtype)  # (out, r)
        if ctx.need_g:
            acc = torch.promote_types(torch.float32, dtype)  # fp32 sums for half precision, fp64 stays fp64
            if ctx.keep_output:
                grad_g = (gy * saved.reshape(gy.shape)).sum(0, dtype=acc) / g  # inner = y / g
            else:
                grad_g = (gyc * saved).sum(0, dtype=acc)
            grad_m, grad_norm = _magnitude_grads(ctx, grad_g.to(g.dtype), g, norm)
        grad_bias = None
        if ctx.needs_input_grad[6]:  # a trainable bias (bias="all"): its (1 - g) part; g of it comes through result
            grad_bias = gy.sum(0, dtype=torch.promote_types(torch.float32, gy.dtype)) * (1 - g)
        return grad_result, grad_h, grad_B, grad_m, grad_norm, None, grad_bias


class DropoutOutput(torch.autograd.Function):
    """Output of a DoRA layer with the paper's dropout, given ``x``, ``noise = dropout(ones)`` and ``result``."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        noise: torch.Tensor,
        result: torch.Tensor,
        lora_A: torch.Tensor,
        lora_B: torch.Tensor,
        magnitude: torch.Tensor,
        norm: torch.Tensor,
        weight: torch.Tensor,
        scaling: float,
    ) -> torch.Tensor:
        g = magnitude / norm  # (out,)
        keep = noise.bool()  # (..., in): a quarter of noise's memory
        kept_value = noise.amax()  # 1 / (1 - p) exactly as the dropout computed it
        y, h, base_d = dropout_output(noise * x, result, lora_A, lora_B, scaling, g, weight)
        ctx.scaling, ctx.m_index, ctx.x_shape = scaling, 5, x.shape
        ctx.save_for_backward(x, keep, kept_value, h, base_d, lora_A, lora_B, magnitude, norm, weight)
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, keep, kept_value, h, base_d, lora_A, lora_B, magnitude, norm, weight = ctx.saved_tensors
        s = ctx.scaling
        g = magnitude / norm  # (out,)
        dtype = h.dtype
        gy = grad_y.reshape(-1, grad_y.shape[-1]).to(dtype)  # (tokens, out)
        sg = (s * g).unsqueeze(1).to(dtype)  # (out, 1)
        gy_h = gy.t() @ h  # (out, r): dL/dy^T h
        grad_B = (gy_h * sg).to(lora_B.dtype)
        acc = torch.promote_types(torch.float32, dtype)  # fp32 sums for half precision, fp64 stays fp64
        grad_g = (gy * base_d).sum(0, dtype=acc) + s * (lora_B * gy_h).sum(1, dtype=acc)
        grad_m, grad_norm = _magnitude_grads(ctx, grad_g.to(g.dtype), g, norm)
        grad_h = gy @ (lora_B.to(dtype) * sg)  # (tokens, r)
        noise = keep.reshape(-1, keep.shape[-1]).to(dtype).mul_(kept_value)  # (tokens, in)
        grad_A = grad_x = None
        if ctx.needs_input_grad[3]:
            grad_A = (grad_h.t() @ (x.reshape(noise.shape).to(dtype) * noise)).to(lora_A.dtype)  # (r, in)
        if ctx.needs_input_grad[0]:
            grad_x = (gy * (g.to(dtype) - 1)) @ weight.to(dtype)  # (tokens, in)
            grad_x.addmm_(grad_h, lora_A.to(dtype)).mul_(noise)
            grad_x = grad_x.view(ctx.x_shape).to(x.dtype)
        grad_result = grad_y if ctx.needs_input_grad[2] else None
        return grad_x, None, grad_result, grad_A, grad_B, grad_m, grad_norm, None, None
