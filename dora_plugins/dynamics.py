"""How far fine-tuning moved each weight's magnitude and direction: the DoRA paper's weight decomposition analysis.

Liu et al. 2024 (arXiv 2402.09353), section 2.2, eq. 5 and 6. For a pre-trained weight ``W0`` (out, in) and its
fine-tuned ``W'`` at some training step, per output row ``n`` (the paper's columns: its ``W`` is in x out):

    delta_M = mean_n | ||W'_n|| - ||W0_n|| |          delta_D = mean_n (1 - cos(W'_n, W0_n))

What ``W'`` is, per kind of checkpoint, with ``V = W0 + s B A``:

- LoRA: ``W' = V``; its magnitude is the implied ``||V_n||``, as the paper measures LoRA (and full fine-tuning);
- DoRA: ``W' = m V / ||V||_row``, so ``||W'_n|| = |m_n|`` and ``W'_n`` points along ``sign(m_n) V_n``;
- a module where only the magnitude trains: DoRA with ``B = 0`` (``V = W0``);
- full fine-tuning: ``W'`` itself.

``V`` is built from the factors in blocks of at most :data:`BLOCK_ROWS` rows, in float32 or wider: never for a
whole layer at once. Both terms avoid cancellation: ``||V|| - ||W0|| = (||V||^2 - ||W0||^2) / (||V|| + ||W0||)``
with ``||V||^2 - ||W0||^2 = <dW, 2 W0 + dW>``, and ``1 - cos = ||u' - u0||^2 / 2`` for the unit rows ``u``.
:mod:`dora_plugins.checkpoint_dynamics` applies this to checkpoints on disk; ``DoraDynamicsCallback`` to a
model while it trains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

BLOCK_ROWS = 1024  # rows of V per block: 1024 x 4096 fp32 is 16 MiB
EPS = 1e-12  # floor of a row norm: a zero row has no direction, and must not give NaN


@dataclass(frozen=True)
class RowChange:
    """Per output row of one weight matrix: ``| ||W'_n|| - ||W0_n|| |`` and ``1 - cos(W'_n, W0_n)``, both (out,)."""

    magnitude: torch.Tensor
    direction: torch.Tensor

    @property
    def delta_m(self) -> float:
        """Eq. 5: the mean magnitude change over the rows."""
        return self.magnitude.mean().item()

    @property
    def delta_d(self) -> float:
        """Eq. 6: the mean direction change over the rows."""
        return self.direction.mean().item()


@torch.no_grad()
def adapter_change(
    weight: torch.Tensor,
    lora_A: torch.Tensor | None,
    lora_B: torch.Tensor | None,
    scaling: float,
    magnitude: torch.Tensor | None = None,
    block_rows: int = BLOCK_ROWS,
) -> RowChange:
    """The change of ``W0`` = ``weight`` (out, in) under a LoRA (``magnitude`` None) or DoRA adapter.

    ``lora_A`` (r, in) and ``lora_B`` (out, r) may both be None: a magnitude-only module. ``magnitude`` (out,)
    is DoRA's ``m``.
    """
    if lora_A is None or lora_B is None:
        return _change(weight, lambda rows, w0: torch.zeros_like(w0), magnitude, block_rows)
    acc = _accumulation_dtype(weight, lora_A, lora_B)
    lora_A = lora_A.to(acc)

    def update(rows: slice, w0: torch.Tensor) -> torch.Tensor:
        return scaling * (lora_B[rows].to(acc) @ lora_A)  # s B A: (block, in)

    return _change(weight, update, magnitude, block_rows)


@torch.no_grad()
def finetuned_change(weight: torch.Tensor, finetuned: torch.Tensor, block_rows: int = BLOCK_ROWS) -> RowChange:
    """The change of ``W0`` = ``weight`` to a fully fine-tuned ``finetuned``, both (out, in)."""
    acc = _accumulation_dtype(weight, finetuned)
    return _change(weight, lambda rows, w0: finetuned[rows].to(acc) - w0, None, block_rows)


def _change(
    weight: torch.Tensor,
    update: Callable[[slice, torch.Tensor], torch.Tensor],
    magnitude: torch.Tensor | None,
    block_rows: int,
) -> RowChange:
    """Both terms, block by block; ``update(rows, W0[rows])`` gives ``dW = V - W0`` for those rows."""
    acc = _accumulation_dtype(weight)
    magnitude_change, direction_change = [], []
    for start in range(0, weight.shape[0], block_rows):
        rows = slice(start, start + block_rows)
        w0 = weight[rows].to(acc)  # (block, in)
        delta = update(rows, w0)  # (block, in)
        new = w0 + delta  # V: (block, in)
        norm0 = w0.norm(dim=1)  # (block,)
        norm = new.norm(dim=1)  # (block,)
        unit0 = w0 / norm0.clamp_min(EPS)[:, None]
        unit = new / norm.clamp_min(EPS)[:, None]
        if magnitude is None:  # LoRA / FT: the implied magnitude ||V_n||
            norm_sq_change = (delta * (2 * w0 + delta)).sum(dim=1)  # ||V_n||^2 - ||W0_n||^2
            magnitude_change.append(norm_sq_change.abs() / (norm + norm0).clamp_min(EPS))
        else:  # DoRA: ||W'_n|| = |m_n|, direction sign(m_n) V_n
            m = magnitude[rows].to(acc)
            magnitude_change.append((m.abs() - norm0).abs())
            unit = unit * torch.where(m < 0, -1.0, 1.0).to(acc)[:, None]
        direction_change.append((unit - unit0).pow(2).sum(dim=1) / 2)  # 1 - cos
    return RowChange(torch.cat(magnitude_change), torch.cat(direction_change))


def _accumulation_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float32, or the widest dtype among ``tensors`` when that is wider (float64 for references)."""
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype
