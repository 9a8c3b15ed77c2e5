"""Nothing goes stale: random sequences of weight changes, mode switches and merges, against stock PEFT after each.

Every way a user or a library changes a DoRA layer is here: in place through ``.data`` (which no version
counter sees), under ``no_grad``, a new storage, ``load_state_dict`` (also with ``assign=True``), an
optimizer step, train/eval, adapter scale, merge/unmerge. After each change, our model and stock PEFT's
(changed the same way) must give the same outputs, with and without gradients,
and inside ``inference_cache()`` (the scope of every ``generate()``).
"""

from __future__ import annotations

import copy
import random

import pytest
import torch
from helpers import MUTABLE, max_rel, params
from peft import LoraConfig, get_peft_model
from torch import nn

from dora_plugins import DoraConfig, dora
from dora_plugins.inference import inference_cache

SEQUENCES = 300
STEPS = 8
CONFIG = dict(r=3, lora_alpha=6, lora_dropout=0.0, target_modules=["0", "2"], task_type=None)


def build(bias: bool, seed: int):
    torch.manual_seed(seed)
    base = nn.Sequential(nn.Linear(16, 12, bias=bias), nn.Tanh(), nn.Linear(12, 10, bias=bias))
    ours = get_peft_model(copy.deepcopy(base), DoraConfig(**CONFIG))
    stock = get_peft_model(copy.deepcopy(base), LoraConfig(use_dora=True, **CONFIG))
    with torch.no_grad():
        for name, param in ours.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.3)
    stock.load_state_dict(ours.state_dict())
    return ours, stock


def mutate(rng: random.Random, ours, stock) -> str:
    """Apply one random change, the same to both models, and name it."""
    kind = rng.choice([k for k in MUTABLE if params(ours, k)])
    factor = rng.choice([0.5, 1.7, -1.0, 3.0])
    merged = ours.base_model.model[0].merged
    changes = ["data", "no_grad", "new_storage", "load", "load_assign", "mode", "scale", "merge"]
    change = rng.choice(changes if merged else [*changes, "step"])  # a merged model trains nothing
    seed, training, value = rng.randrange(2**31), rng.random() < 0.5, rng.choice([0.5, 2.0, None])
    for model in (ours, stock):
        noise = torch.Generator().manual_seed(seed)
        if change == "data":
            for p in params(model, kind):
                p.data.mul_(factor)  # .data: no version counter sees this
        elif change == "no_grad":
            with torch.no_grad():
                for p in params(model, kind):
                    p.add_(torch.randn(p.shape, generator=noise) * 0.1)
        elif change == "new_storage":
            for p in params(model, kind):
                p.data = p.data.clone() * factor
        elif change in ("load", "load_assign"):
            state = {k: v * factor if kind in k else v.clone() for k, v in model.state_dict().items()}
            model.load_state_dict(state, assign=change == "load_assign")
        elif change == "step":
            model.train(training)
            optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
            model(torch.randn(5, 16, generator=noise)).pow(2).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
        elif change == "mode":
            model.train(training)
        elif change == "scale":
            for module in model.modules():
                if hasattr(module, "scale_layer"):
                    module.scale_layer(value) if value else module.unscale_layer()
        elif change == "merge":
            model.unmerge_adapter() if merged else model.merge_adapter()
    if change == "step":  # the two steps differ by rounding, which further steps would amplify: start level
        stock.load_state_dict(ours.state_dict())
    return f"{change}({kind}, {factor}, {training}, {value})"


def outputs(model, x: torch.Tensor) -> list[torch.Tensor]:
    """Every path a change must reach: without gradients, inside ``inference_cache()`` (twice: the cached
    constants), and with gradients (training or not)."""
    with torch.no_grad():
        results = [model(x)]
        with inference_cache():
            results += [model(x), model(x)]
    return [*results, model(x).detach()]


def errors(ours, stock, x: torch.Tensor) -> tuple[float, float]:
    """The largest error of our outputs and of stock PEFT's against float64 arithmetic on the same parameters.

    Stock PEFT caches nothing, so a float64 copy of it gives the exact output of the parameters as they are now.
    """
    with torch.no_grad():
        exact = copy.deepcopy(stock).double()(x.double())
    ours_error, stock_error = (max(max_rel(y.double(), exact) for y in outputs(m, x)) for m in (ours, stock))
    return ours_error, stock_error


@pytest.mark.slow
@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("shared_product", [False, True], ids=["blockwise_norm", "shared_product"])
def test_random_changes_never_leave_a_stale_output(monkeypatch, bias, shared_product):
    """A stale output is off by the size of a change (1e-2 and more). What float32 rounding costs depends on the
    state: a few float32 epsilons (1.2e-7) where it is well conditioned (ours at most 7e-7 in these sequences), and
    up to 1.3e-4 for stock PEFT itself where it is not (seed 128: a magnitude negated while merged, unmerged,
    then scaled). So our error may be twice stock's own on the same state, plus 1e-6. ``shared_product``: the
    training forward takes the norm's ``A W0^T`` from the base product, as it does for large weights."""
    if shared_product:
        monkeypatch.setattr(dora, "SHARED_PRODUCT_ELEMENTS", 0)
    mismatches = []
    for seed in range(SEQUENCES // 2):
        rng = random.Random(seed)
        ours, stock = build(bias, seed)
        ours.train(rng.random() < 0.5), stock.train(ours.training)
        x = torch.randn(4, 16, generator=torch.Generator().manual_seed(seed))
        history = []
        for _ in range(STEPS):
            history.append(mutate(rng, ours, stock))
            ours_error, stock_error = errors(ours, stock, x)
            if not ours_error <= 2 * stock_error + 1e-6:
                mismatches.append((seed, history[:], ours_error, stock_error))
                break
    assert not mismatches, mismatches[:5]
