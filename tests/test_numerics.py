"""Numeric corners against a float64 dense reference: our error is never more than twice PEFT's.

The sweep: rows that ``s B A`` shrinks by a factor 1 to 1e4 (``W0 + s B A = W0 / k``, where a norm made of
large cancelling terms loses digits), magnitudes from the row norm down to 1e-12 of it (where recovering
``inner`` from the output, or PEFT's ``(g - 1) * base + base``, loses digits), with and without bias, in a
float32 and a bfloat16 model (adapters in float32, PEFT's default). Compared: the output and the gradients
of the magnitude, A and B, each as the largest error relative to the reference's largest value.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from dora_plugins import DoraConfig

OUT, IN, R, ALPHA = 32, 48, 4, 8
S = ALPHA / R
SHRINKS = (1, 10, 100, 1e3, 1e4)
MAGNITUDES = (1, 1e-3, 1e-6, 1e-9, 1e-12)
NOISE = 2 * torch.finfo(torch.float32).eps  # differences at the level of float32 rounding are no signal


def case(shrink: float, g: float, bias: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    """Float64 parameters: half the rows of W0 lie in A's row space and ``s B A`` shrinks them by ``shrink``."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(R, IN, generator=gen, dtype=torch.float64)
    u = torch.randn(OUT, R, generator=gen, dtype=torch.float64)
    half = OUT // 2
    weight = torch.cat([u[:half] @ a, torch.randn(OUT - half, IN, generator=gen, dtype=torch.float64)])
    b = torch.cat([(1 / shrink - 1) * u[:half] / S, 0.05 * torch.randn(OUT - half, R, generator=gen)])
    return dict(
        weight=weight,
        bias=torch.randn(OUT, generator=gen, dtype=torch.float64) if bias else None,
        lora_A=a,
        lora_B=b.double(),
        g=torch.full((OUT,), g, dtype=torch.float64),
        x=torch.randn(20, IN, generator=gen, dtype=torch.float64),
        grad_y=torch.randn(20, OUT, generator=gen, dtype=torch.float64),
    )


def run(config_cls, p: dict, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Output and gradients of a one-layer model holding ``p`` (base in ``dtype``, adapters in float32)."""
    base = nn.Sequential(nn.Linear(IN, OUT, bias=p["bias"] is not None))
    with torch.no_grad():
        base[0].weight.copy_(p["weight"])
        if p["bias"] is not None:
            base[0].bias.copy_(p["bias"])
    config = config_cls(r=R, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=["0"], task_type=None)
    model = get_peft_model(base.to(dtype), config).train()
    layer = model.base_model.model[0]
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(p["lora_A"])
        layer.lora_B["default"].weight.copy_(p["lora_B"])
        layer.lora_magnitude_vector["default"].weight.copy_(p["magnitude"])
    y = model(p["x"].to(dtype))
    y.backward(p["grad_y"].to(y.dtype))
    grads = {
        "m": layer.lora_magnitude_vector["default"].weight.grad,
        "A": layer.lora_A["default"].weight.grad,
        "B": layer.lora_B["default"].weight.grad,
    }
    return {"y": y.detach(), **grads}


def reference(p: dict) -> dict[str, torch.Tensor]:
    """The paper's formula in float64 with plain autograd (detached norm)."""
    a, b, m = (p[k].clone().requires_grad_() for k in ("lora_A", "lora_B", "magnitude"))
    norm = torch.linalg.norm(p["weight"] + S * b @ a, dim=1).detach()
    y = (m / norm) * (p["x"] @ p["weight"].t() + S * p["x"] @ a.t() @ b.t())
    y = y + (0 if p["bias"] is None else p["bias"])
    y.backward(p["grad_y"])
    return {"y": y.detach(), "m": m.grad, "A": a.grad, "B": b.grad}


def as_held(p: dict, dtype: torch.dtype) -> dict:
    """``p`` rounded to what the models hold (base in ``dtype``, adapters and magnitude in float32), in float64."""
    held = dict(p)
    held["weight"] = p["weight"].to(dtype).double()
    held["bias"] = None if p["bias"] is None else p["bias"].to(dtype).double()
    held["x"] = p["x"].to(dtype).double()
    held["lora_A"], held["lora_B"] = p["lora_A"].float().double(), p["lora_B"].float().double()
    norm = torch.linalg.norm(held["weight"] + S * held["lora_B"] @ held["lora_A"], dim=1)
    held["magnitude"] = (p["g"] * norm).float().double()
    return held


def error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want).abs().max() / want.abs().max()).item()


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
def test_error_is_never_more_than_twice_peft_s(dtype, bias):
    worse = []
    for shrink, g in itertools.product(SHRINKS, MAGNITUDES):
        p = as_held(case(shrink, g, bias), dtype)
        want = reference(p)
        ours = run(DoraConfig, p, dtype)
        stock = run(lambda **kw: LoraConfig(use_dora=True, **kw), p, dtype)
        for name in want:
            e_ours, e_stock = error(ours[name], want[name]), error(stock[name], want[name])
            if e_ours > 2 * e_stock + NOISE:
                worse.append((shrink, g, name, f"{e_ours:.2e} vs {e_stock:.2e}"))
    assert not worse, worse


def test_tiny_magnitudes_keep_the_output_exact_where_peft_loses_it():
    """PEFT computes ``(g - 1) * base + base``: at g = 1e-9 nothing of ``g * base`` survives; ours keeps it."""
    p = as_held(case(1, 1e-9, bias=False), torch.float32)
    want = reference(p)["y"]
    assert error(run(DoraConfig, p, torch.float32)["y"], want) < 1e-6
    assert error(run(lambda **kw: LoraConfig(use_dora=True, **kw), p, torch.float32)["y"], want) > 0.5
