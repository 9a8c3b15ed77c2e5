"""The DoRA computation (Liu et al. 2024, arXiv 2402.09353), free of any PEFT machinery.

For a frozen linear layer ``W0`` (out, in), LoRA factors ``B`` (out, r) and ``A`` (r, in),
scaling ``s`` and a trainable magnitude ``m`` (out):

    W' = m * (W0 + s*B@A) / ||W0 + s*B@A||_row                     (eq. 1 of the paper)

The row norm is computed the way PEFT computes it, as the norm of ``W0_i + s B_i A`` itself, so it is
as accurate as PEFT's even where ``s B A`` cancels most of ``W0``; but in blocks of rows, so that neither
``W0 + s*B@A`` (out, in) nor PEFT's (in, in) identity matrix is ever held whole. Nothing is cached
between calls: every forward sees the weights as they are (in-place edits, loads, optimizer steps,
sharded parameters that exist only inside the wrapped module's forward).

Forward, as the paper's code and PEFT apply dropout (``dropout_mode="paper"``; section 4.3 detaches the norm):

    y = W0 x + (g - 1) * (W0 drop(x)) + g * s * B A drop(x) + bias,   g = m / norm

which, without dropout, is ``g * (W0 x + s B A x) + bias`` and reuses the base output.
``dropout_mode="lora_branch"`` (torchtune's choice) drops the input of the LoRA branch only,
``g * (W0 x + s B A drop(x)) + bias``, which saves the second base matrix product.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels

# A zero row of W0 has norm 0 at initialisation; without a floor, m / norm is 0 / 0 (PEFT issue 2049).
NORM_EPS = 1e-12
# Rows of W0 + s*B@A computed at once, whatever the layer's shape. On the CPU 256K values (1 MiB in fp32), so
# that a block stays in the L2 cache between the product that writes it and the norm that reads it: at 4096 x
# 4096 the norm takes about half the time it takes in blocks of 4M values. On a GPU, and in a compiled graph
# (one unrolled block per loop pass), blocks of 4M values (16 MiB in fp32): fewer, larger launches.
BLOCK_ELEMENTS = 1 << 18
LARGE_BLOCK_ELEMENTS = 1 << 22
DROPOUT_MODES = ("paper", "lora_branch")
# Training on the CPU takes the norm's A W0^T from the base layer's product (peft_layer.DoraLinear) for weights of at
# least this many elements (16 MiB in fp32, half this machine's 32 MiB L3 cache), which the blockwise norm reads
# from memory once more. Base product and norm of one layer on one core, 128 / 256 tokens, r = 32, shared over
# blockwise time: 4096 x 4096 0.94 / 0.94, 2752 x 1024 0.98 / 1.04, 1024 x 1024 1.07 / 1.06, 576 x 576 1.19 / 1.11.
SHARED_PRODUCT_ELEMENTS = 1 << 22
# factored_row_norms recomputes exactly the rows whose factored terms cancel to less than 1 / MAX_CANCELLATION of
# their size: at 3 no row of independent W0 and B A (whose terms add up to at most twice the norm) is recomputed.
MAX_CANCELLATION = 3.0


def accumulation_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """fp32 for half precisions, the widest input dtype when it is wider (float64 for gradcheck)."""
    result = torch.float32
    for dtype in dtypes:
        result = torch.promote_types(result, dtype)
    return result


def weight_norm(
    weight: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float, detach: bool = True
) -> torch.Tensor:
    """``||W0_i + s B_i A||`` per output row (out,), in at least fp32, floored at NORM_EPS.

    ``detach=False`` gives the norm a gradient (the paper's full gradient), computed from the factors.
    """
    if detach or not torch.is_grad_enabled():
        with torch.no_grad():
            return _row_norms(weight.detach(), lora_A.detach(), lora_B.detach(), scaling)
    return RowNorm.apply(weight, lora_A, lora_B, scaling)


def _blocks(weight: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float):
    """``(rows, W0[rows] + s B[rows] A)`` in the accumulation dtype, block by block of output rows.

    Every block is written into one buffer, valid until the next block is taken: one allocation per call, not one
    per block, which glibc serves from fresh zeroed pages once blocks are above its mmap threshold (128 KiB
    unless it has moved it up; blocks are 1 MiB on the CPU).
    """
    acc = accumulation_dtype(weight.dtype, lora_A.dtype, lora_B.dtype)
    a, b = lora_A.to(acc), lora_B.to(acc)  # (r, in), (out, r)
    large = weight.device.type != "cpu" or torch.compiler.is_compiling()
    step = max(1, (LARGE_BLOCK_ELEMENTS if large else BLOCK_ELEMENTS) // weight.shape[1])
    buffer = weight.new_empty((min(step, weight.shape[0]), weight.shape[1]), dtype=acc)
    for start in range(0, weight.shape[0], step):
        rows = slice(start, start + step)
        block = buffer[: min(step, weight.shape[0] - start)]
        yield rows, block.copy_(weight[rows]).addmm_(b[rows], a, alpha=scaling)  # (rows, in)


def _row_norms(weight: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float) -> torch.Tensor:
    norms = [torch.linalg.vector_norm(v, dim=1) for _, v in _blocks(weight, lora_A, lora_B, scaling)]
    return torch.cat(norms).clamp_min(NORM_EPS)  # (out,)


def factored_row_norms(
    weight: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float, weight_a: torch.Tensor
) -> torch.Tensor:
    """:func:`weight_norm` (detached) given ``weight_a = A W0^T`` (r, out), with no other product with ``W0``.

    ``||W0_i + s B_i A||^2 = ||W0_i||^2 + 2 s <B_i, (A W0^T)_i> + s^2 B_i (A A^T) B_i^T``: one pass over ``W0``
    for its row norms, the rest of size (out, r). The sums over r and the three terms run in float64 (in float32,
    ``B_i (A A^T) B_i^T`` loses digits where the rows of A are nearly parallel). What remains is the float32
    rounding of ``||W0_i||`` and ``A W0^T``: about ``u x bound`` on ``norm^2``, ``bound = (||W0_i|| + s e_i)^2``,
    where ``e_i = max(||B_i A||, sqrt(sum_k B_ik^2 ||A_k||^2))`` is the size that the rounding of ``(A W0^T)_i``
    takes in the cross term. Where the terms cancel, ``norm^2`` is small against ``bound``: the rows with
    ``bound > MAX_CANCELLATION x norm^2`` are recomputed exactly from ``W0_i + s B_i A`` (:func:`_row_norms`), so
    the others keep a relative error of about ``MAX_CANCELLATION / 2`` roundings, the order of the exact
    computation's own (``tests/test_dora_math.py`` sweeps cancellation, scales and nearly parallel ``A`` rows
    against float64).
    """
    acc = accumulation_dtype(weight.dtype, lora_A.dtype, lora_B.dtype)
    a, b = lora_A.double(), lora_B.double()  # (r, in), (out, r): float64 where only r-sized sums follow
    base = torch.linalg.vector_norm(weight.to(acc), dim=1).double()  # ||W0_i||
    cross = (b * weight_a.t()).sum(1)  # <B_i, (W0 A^T)_i>
    gram = a @ a.t()  # (r, r) A A^T
    lora = ((b @ gram) * b).sum(1)  # ||B_i A||^2
    spread = torch.maximum(lora, b.square() @ gram.diagonal()).sqrt()  # e_i
    squared = base.square() + (2 * scaling) * cross + scaling**2 * lora
    bound = (base + scaling * spread).square()
    norm = squared.clamp_min(0).sqrt().to(acc)
    cancelled = (squared * MAX_CANCELLATION < bound).nonzero().squeeze(1)
    if cancelled.numel():
        norm[cancelled] = _row_norms(weight[cancelled], lora_A, lora_B[cancelled], scaling)
    return norm.clamp_min(NORM_EPS)  # (out,)


class RowNorm(torch.autograd.Function):
    """:func:`weight_norm` with a gradient: ``d norm_i / d V_i = V_i / norm_i`` for ``V = W0 + s B A``, applied
    block by block, so backward never holds ``V`` whole either."""

    @staticmethod
    def forward(ctx, weight, lora_A, lora_B, scaling: float):
        norm = _row_norms(weight, lora_A, lora_B, scaling)
        ctx.scaling = scaling
        ctx.save_for_backward(weight, lora_A, lora_B, norm)
        return norm

    @staticmethod
    def backward(ctx, grad_norm):
        weight, lora_A, lora_B, norm = ctx.saved_tensors
        s = ctx.scaling
        c = grad_norm.to(norm.dtype) / norm  # (out,)
        a = lora_A.to(norm.dtype)  # (r, in)
        cb = c.unsqueeze(1) * lora_B.to(norm.dtype)  # (out, r)
        grad_w = torch.empty_like(weight) if ctx.needs_input_grad[0] else None
        grad_a = torch.zeros_like(a)
        grad_b = torch.empty_like(cb)
        for rows, v in _blocks(weight, lora_A, lora_B, s):
            grad_b[rows] = s * c[rows].unsqueeze(1) * (v @ a.t())  # (rows, r)
            grad_a.addmm_(cb[rows].t(), v, alpha=s)  # (r, in)
            if grad_w is not None:
                grad_w[rows] = (c[rows].unsqueeze(1) * v).to(weight.dtype)
        return grad_w, grad_a.to(lora_A.dtype), grad_b.to(lora_B.dtype), None


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
    dropout: nn.Module | None,
    dropout_mode: str = "paper",
) -> torch.Tensor:
    """The layer output given ``result = W0 x + bias``; ``dropout`` None means no dropout is active.

    With the paper's dropout, :func:`dropout_noise` makes the same random draw as PEFT's ``dropout(x)``, and the
    mask then costs one byte per element in backward. When a gradient is needed, :mod:`dora_plugins.kernels`
    computes the output and saves fewer activations.
    """
    grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, result, lora_A, lora_B, magnitude, norm)
    )
    if dropout is None or dropout_mode == "lora_branch":
        h = F.linear(x if dropout is None else dropout(x), lora_A)  # (..., r)
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
