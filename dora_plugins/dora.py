"""The DoRA computation (Liu et al. 2024, arXiv 2402.09353), free of any PEFT machinery.

For a frozen linear layer ``W0`` (out, in), LoRA factors ``B`` (out, r) and ``A`` (r, in),
scaling ``s`` and a trainable magnitude ``m`` (out):

    W' = m * (W0 + s*B@A) / ||W0 + s*B@A||_row                     (eq. 1 of the paper)

The row norm is computed from the factors, so neither ``W0 + s*B@A`` (out, in) nor an
(in, in) identity matrix is ever built:

    ||W0_i + s(BA)_i||^2 = ||W0_i||^2 + 2s <(W0 A^T)_i, B_i> + s^2 B_i (A A^T) B_i^T

Forward, as the paper's code and PEFT apply dropout (section 4.3 detaches the norm):

    y = W0 x + (g - 1) * (W0 drop(x)) + g * s * B A drop(x) + bias,   g = m / norm

which, without dropout, is ``g * (W0 x + s B A x) + bias`` and reuses the base output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels

# A zero row of W0 has norm 0 at initialisation; without a floor, m / norm is 0 / 0 (PEFT issue 2049).
NORM_EPS = 1e-12


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half precisions, the input's own dtype when it is wider (float64 for gradcheck)."""
    return torch.promote_types(dtype, torch.float32)


def base_row_norm_sq(weight: torch.Tensor) -> torch.Tensor:
    """``||W0_i||^2`` per output row, in at least fp32: constant while W0 is frozen, so callers cache it."""
    return weight.detach().to(accumulation_dtype(weight.dtype)).pow(2).sum(dim=1)  # (out,)


def weight_norm(
    weight: torch.Tensor,
    lora_A: torch.Tensor,
    lora_B: torch.Tensor,
    scaling: float,
    weight_sq: torch.Tensor,
) -> torch.Tensor:
    """Row norms of ``W0 + s*B@A`` (out,), in at least fp32, from the factors (see the module docstring)."""
    return row_norm(weight_sq, *norm_terms(weight, lora_A, lora_B), scaling)


def norm_terms(weight: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``cross_i = <(W0 A^T)_i, B_i>`` and ``quad_i = B_i (A A^T) B_i^T`` (out,), in at least fp32.

    ``||W0_i||^2 + s * cross_i`` is also ``<W0_i + s(BA)_i, W0_i>``: the direction change needs no more.
    """
    acc = accumulation_dtype(lora_A.dtype)
    a = lora_A.to(acc)  # (r, in)
    b = lora_B.to(acc)  # (out, r)
    w_a = (lora_A.to(weight.dtype) @ weight.detach().t()).t().to(acc)  # W0 A^T: (out, r)
    cross = (w_a * b).sum(dim=1)  # (out,)
    quad = ((b @ (a @ a.t())) * b).sum(dim=1)  # (out,)
    return cross, quad


def row_norm(weight_sq: torch.Tensor, cross: torch.Tensor, quad: torch.Tensor, scaling: float) -> torch.Tensor:
    """``sqrt(||W0_i||^2 + 2s cross_i + s^2 quad_i)``, floored at NORM_EPS."""
    norm_sq = weight_sq + 2 * scaling * cross + scaling**2 * quad
    return norm_sq.clamp_min(NORM_EPS**2).sqrt()


def dora_forward(
    x: torch.Tensor,
    result: torch.Tensor,
    *,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lora_A: torch.Tensor,
    lora_B: torch.Tensor,
    scaling: float,
    magnitude: torch.Tensor,
    norm: torch.Tensor,
    dropout: torch.nn.Module | None,
) -> torch.Tensor:
    """The layer output given ``result = W0 x + bias``; ``dropout`` None means no dropout is active.

    With dropout, :func:`dropout_noise` makes the same random draw as PEFT's ``dropout(x)``, and the mask then
    costs one byte per element in backward.
    When a gradient is needed, :mod:`dora_plugins.kernels` computes the output and saves fewer activations.
    """
    grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, result, lora_A, lora_B, magnitude, norm)
    )
    if dropout is None:
        h = F.linear(x, lora_A)  # (..., r)
        if grad:
            return kernels.ScaledOutput.apply(result, h, lora_B, magnitude, norm, scaling, bias)
        factors = kernels.scale_factors(lora_B, scaling, magnitude / norm, bias, h.dtype)
        return kernels.scaled_output(result, h, *factors)
    noise = dropout_noise(x, dropout)  # (..., in): 0 or 1 / (1 - p)
    if grad:
        return kernels.DropoutOutput.apply(x, noise, result, lora_A, lora_B, magnitude, norm, weight, scaling)
    return kernels.dropout_output(x * noise, result, lora_A, lora_B, scaling, magnitude / norm, weight)[0]


def dropout_noise(x: torch.Tensor, dropout: nn.Module) -> torch.Tensor:
    """``noise`` (shaped like ``x``) with ``dropout(x) == x * noise``, from the random draw ``dropout(x)`` makes.

    Masks do not depend on values. On CPU, ``nn.Dropout`` draws ``empty_like(x).bernoulli_(1 - p).div_(1 - p)``
    (ATen's ``_dropout_impl``), so that is done directly; elsewhere the module runs on ones laid out like ``x``.
    """
    if isinstance(dropout, nn.Dropout) and x.device.type == "cpu" and dropout.p < 1:
        return torch.empty_like(x).bernoulli_(1 - dropout.p).div_(1 - dropout.p)
    return dropout(torch.ones_like(x))


def merged_weight(
    weight: torch.Tensor,
    lora_A: torch.Tensor,
    lora_B: torch.Tensor,
    scaling: float,
    magnitude: torch.Tensor,
    norm: torch.Tensor,
) -> torch.Tensor:
    """``W' = m/norm * (W0 + s*B@A)``, in the dtype of W0 (computed in at least fp32)."""
    acc = accumulation_dtype(weight.dtype)
    delta = scaling * (lora_B.to(acc) @ lora_A.to(acc))  # (out, in)
    g = (magnitude.to(acc) / norm).unsqueeze(1)  # (out, 1)
    return (g * (weight.to(acc) + delta)).to(weight.dtype)


def unmerged_weight(
    merged: torch.Tensor,
    lora_A: torch.Tensor,
    lora_B: torch.Tensor,
    scaling: float,
    magnitude: torch.Tensor,
    norm: torch.Tensor,
) -> torch.Tensor:
    """Inverse of :func:`merged_weight` given the norm used to merge: ``W0 = W' * norm/m - s*B@A``."""
    acc = accumulation_dtype(merged.dtype)
    delta = scaling * (lora_B.to(acc) @ lora_A.to(acc))
    g = (magnitude.to(acc) / norm).unsqueeze(1)
    return (merged.to(acc) / g - delta).to(merged.dtype)
