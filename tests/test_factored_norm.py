"""The training path that shares the base layer's product with the norm (``kernels.BaseProduct``,
``dora.factored_row_norms``): as accurate as the exact blockwise norm against float64, taken only where the
base layer is a plain frozen ``nn.Linear`` without hooks, and equal to PEFT's DoRA there."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import max_rel
from peft import LoraConfig, get_peft_model
from torch import nn

from dora_plugins import DoraConfig, dora, kernels
from dora_plugins.dora import NORM_EPS

OUT, IN, R, S = 96, 160, 8, 2.0
NOISE = 2 * torch.finfo(torch.float32).eps  # float32 rounding: no signal


def factors(kind: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """W0 (out, in), A (r, in), B (out, r) in float32 for one numeric corner.

    ``B*k``: independent W0 and B A, B scaled by k (k = 100: s B A dominates W0). ``parallel``: rows of A nearly
    parallel (B_i A cancels within itself). ``shrink k``: half the rows of W0 lie in A's row space and
    ``W0 + s B A = W0 / k`` there (the factored terms cancel).
    """
    gen = torch.Generator().manual_seed(seed)
    weight = 0.02 * torch.randn(OUT, IN, generator=gen)
    lora_A = (2 * torch.rand(R, IN, generator=gen) - 1) / IN**0.5
    if kind.startswith("B*"):
        return weight, lora_A, float(kind[2:]) * torch.randn(OUT, R, generator=gen)
    if kind == "parallel":
        return weight, (lora_A[:1] + 0.1 * lora_A).contiguous(), torch.randn(OUT, R, generator=gen)
    shrink = float(kind.split()[1])
    u = torch.randn(OUT // 2, R, generator=gen, dtype=torch.float64)
    weight[: OUT // 2] = (u @ lora_A.double()).float()
    lora_B = 0.01 * torch.randn(OUT, R, generator=gen)
    lora_B[: OUT // 2] = ((1 / shrink - 1) * u / S).float()
    return weight, lora_A, lora_B


def row_errors(norm: torch.Tensor, weight, lora_A, lora_B) -> torch.Tensor:
    exact = torch.linalg.norm(weight.double() + S * lora_B.double() @ lora_A.double(), dim=1)
    return (norm.double() - exact).abs() / exact


KINDS = ["B*0", "B*0.01", "B*1", "B*100", "parallel", "shrink 1.5", "shrink 10", "shrink 1e4"]


@pytest.mark.parametrize("kind", KINDS)
def test_factored_norm_is_as_accurate_as_the_exact_blockwise_norm(kind):
    weight, lora_A, lora_B = factors(kind)
    factored = dora.factored_row_norms(weight, lora_A, lora_B, S, lora_A @ weight.t())
    blockwise = dora._row_norms(weight, lora_A, lora_B, S)
    assert factored.dtype == torch.float32
    worst = row_errors(blockwise, weight, lora_A, lora_B).max().item()
    assert row_errors(factored, weight, lora_A, lora_B).max().item() <= 2 * worst + NOISE


def test_only_rows_whose_terms_cancel_are_recomputed(monkeypatch):
    recomputed = []

    def spy(weight, *args):
        recomputed.append(weight.shape[0])
        return dora_row_norms(weight, *args)

    dora_row_norms = dora._row_norms
    monkeypatch.setattr(dora, "_row_norms", spy)
    for kind, rows in [("B*0.01", 0), ("B*1", 0), ("B*100", 0), ("shrink 10", OUT // 2)]:
        recomputed.clear()
        weight, lora_A, lora_B = factors(kind)
        dora.factored_row_norms(weight, lora_A, lora_B, S, lora_A @ weight.t())
        assert sum(recomputed) == rows, kind


def test_zero_row_gives_the_floor():
    weight, lora_A, lora_B = factors("B*0.01")
    weight[3], lora_B[3] = 0.0, 0.0
    norm = dora.factored_row_norms(weight, lora_A, lora_B, S, lora_A @ weight.t())
    assert norm[3] == NORM_EPS and torch.isfinite(norm).all()


def models(base_bias: bool, ours_only: dict | None = None, **config):
    """Our DoRA model and stock PEFT's, equal, in training mode; ``ours_only``: options of DoraConfig alone."""
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(24, 20, bias=base_bias), nn.Tanh(), nn.Linear(20, 16, bias=base_bias))
    kwargs = dict(r=4, lora_alpha=8, target_modules=["0", "2"], task_type=None, **config)
    ours = get_peft_model(copy.deepcopy(base), DoraConfig(**kwargs, **(ours_only or {}))).train()
    stock = get_peft_model(copy.deepcopy(base), LoraConfig(use_dora=True, **kwargs)).train()
    with torch.no_grad():
        for name, param in ours.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.3)
            if "magnitude" in name:
                param.mul_(1.3)
    stock.load_state_dict(ours.state_dict())
    return ours, stock


def step(model, x):
    model.zero_grad()
    y = model(x)
    y.pow(2).sum().backward()
    return y.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def shared_products(monkeypatch, min_elements: int = 0) -> list[int]:
    """Counts the shared products; layers of ``min_elements`` and more share (tiny ones here, unless told)."""
    monkeypatch.setattr(dora, "SHARED_PRODUCT_ELEMENTS", min_elements)
    calls = []
    apply = kernels.BaseProduct.apply

    def counted(*args):
        calls.append(1)
        return apply(*args)

    monkeypatch.setattr(kernels.BaseProduct, "apply", counted)
    return calls


@pytest.mark.parametrize("bias", ["none", "all"], ids=["no_bias", "trainable_bias"])
def test_training_shares_the_base_product_and_matches_peft(monkeypatch, bias):
    """Outputs and every gradient (a trainable base bias's too) equal PEFT's; the base product is shared."""
    calls = shared_products(monkeypatch)
    ours, stock = models(bias == "all", lora_dropout=0.0, bias=bias)
    x = torch.randn(3, 5, 24, generator=torch.Generator().manual_seed(1))
    (y, grads), (y_stock, grads_stock) = step(ours, x), step(stock, x)
    assert len(calls) == 2
    assert max_rel(y, y_stock) < 1e-5
    for name, grad in grads.items():
        assert max_rel(grad, grads_stock[name]) < 1e-5, name


def test_a_hooked_base_layer_runs_its_own_forward(monkeypatch):
    calls = shared_products(monkeypatch)
    ours, stock = models(True, lora_dropout=0.0)
    seen = []
    base = ours.base_model.model[0].get_base_layer()
    base.register_forward_hook(lambda module, args, output: seen.append(output.shape))
    x = torch.randn(6, 24, generator=torch.Generator().manual_seed(1))
    y, _ = step(ours, x)
    assert seen == [(6, 20)] and len(calls) == 1  # only the unhooked second layer shares
    assert max_rel(y, step(stock, x)[0]) < 1e-5


@pytest.mark.parametrize(
    ("config", "training", "dtype", "shares"),
    [
        (dict(lora_dropout=0.0), True, torch.float64, True),
        (dict(lora_dropout=0.1, ours_only=dict(dropout_mode="lora_branch")), True, torch.float32, True),
        (dict(lora_dropout=0.1), True, torch.float32, False),  # the paper's dropout: its own Function
        (dict(lora_dropout=0.0, ours_only=dict(detach_norm=False)), True, torch.float32, False),  # norm gradient
        (dict(lora_dropout=0.0), False, torch.float32, False),  # eval: the inference path
        (dict(lora_dropout=0.0), True, torch.bfloat16, False),  # the norm's sums need float32
    ],
    ids=["fp64", "lora_branch", "paper_dropout", "full_norm", "eval", "bf16"],
)
def test_where_the_base_product_is_shared(monkeypatch, config, training, dtype, shares):
    calls = shared_products(monkeypatch)
    ours, _ = models(False, **config)
    ours.to(dtype).train(training)
    ours(torch.randn(4, 24, dtype=dtype)).sum().backward()
    assert len(calls) == (2 if shares else 0)


def test_small_weights_keep_the_blockwise_norm(monkeypatch):
    """Where the cache keeps W0, the blockwise norm costs less than r more rows of the base product."""
    calls = shared_products(monkeypatch, dora.SHARED_PRODUCT_ELEMENTS)
    ours, _ = models(False, lora_dropout=0.0)
    ours(torch.randn(4, 24)).sum().backward()
    assert not calls
