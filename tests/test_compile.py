"""torch.compile: no graph break of ours, the compiled model equals eager, and sees every change eager sees.

Compiling takes tens of seconds per model on a CPU, so these tests use small models and few recompiles.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch._dynamo
from helpers import MUTABLE, TARGETS, make_tiny_llama, max_rel, params, perturb_adapters
from peft import LoraConfig, get_peft_model
from torch import nn

from dora_plugins import DoraConfig

IDS = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))
MODES = [
    pytest.param(dict(lora_dropout=0.0), id="no_dropout"),
    pytest.param(dict(lora_dropout=0.1), id="paper_dropout"),
    pytest.param(dict(lora_dropout=0.1, dropout_mode="lora_branch"), id="branch_dropout"),
]


def graph_breaks(model, train: bool, grad: bool) -> int:
    model.train(train)
    torch._dynamo.reset()

    def step(ids):
        with torch.set_grad_enabled(grad):
            return model(input_ids=ids, labels=ids).loss

    return torch._dynamo.explain(step)(IDS).graph_break_count


def llama(bias: bool):
    model = make_tiny_llama()
    if bias:  # biased q, k, v projections, as Qwen2's
        for layer in model.model.layers:
            for name in ("q_proj", "k_proj", "v_proj"):
                old = getattr(layer.self_attn, name)
                setattr(layer.self_attn, name, nn.Linear(old.in_features, old.out_features, bias=True))
    return model


PASSES = ((True, True), (False, True), (False, False))  # (train, grad): training, eval with and without grad
QKV = ["q_proj", "k_proj", "v_proj"]
MAGNITUDE_ONLY = ["o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.mark.slow
def test_plain_lora_has_no_graph_break_the_baseline():
    lora = get_peft_model(llama(bias=False), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=TARGETS))
    assert [graph_breaks(lora, train, grad) for train, grad in PASSES] == [0, 0, 0]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("config", "bias"),
    [
        (dict(lora_dropout=0.0), False),
        (dict(lora_dropout=0.1), True),
        (dict(lora_dropout=0.1, dropout_mode="lora_branch"), False),
        (dict(lora_dropout=0.0, target_modules=QKV, magnitude_only_modules=MAGNITUDE_ONLY), False),
        (dict(lora_dropout=0.1, target_modules=["up_proj"], magnitude_only_modules=QKV), True),  # biased q, k, v
    ],
    ids=["no_dropout", "paper_dropout-bias", "branch_dropout", "magnitude_only", "magnitude_only-paper_dropout-bias"],
)
def test_our_layer_adds_no_graph_break_to_a_llama(config, bias):
    ours = get_peft_model(llama(bias), DoraConfig(r=4, lora_alpha=8, **config))
    assert [graph_breaks(ours, train, grad) for train, grad in PASSES] == [0, 0, 0]


def two_layers(**config):
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 10, bias=False))
    model = get_peft_model(base, DoraConfig(r=3, lora_alpha=6, target_modules=["0", "2"], task_type=None, **config))
    perturb_adapters(model)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("config", MODES)
def test_compiled_forward_and_backward_equal_eager(config):
    """fullgraph=True: the whole model is one graph; fallback_random draws the eager masks."""
    # config.patch, not monkeypatch: undoing monkeypatch.setattr on inductor's config module deleted the
    # setting, and every later compile in the process failed with "fallback_random does not exist"
    with torch._inductor.config.patch(fallback_random=True):
        _compiled_equals_eager(config)


def _compiled_equals_eager(config: dict) -> None:
    model = two_layers(**config).train()
    x = torch.randn(4, 5, 16, generator=torch.Generator().manual_seed(1))
    results = []
    for run in (model, torch.compile(model, fullgraph=True)):
        torch.manual_seed(3)
        y = run(x)
        y.pow(2).sum().backward()
        results.append((y.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}))
        model.zero_grad()
    assert max_rel(results[1][0], results[0][0]) < 1e-6
    for name, grad in results[0][1].items():
        assert max_rel(results[1][1][name], grad) < 1e-5, name


@pytest.mark.slow
def test_compiled_model_sees_in_place_changes_and_mode_switches():
    """The stale-cache check of test_mutations, on a compiled model: parameters are graph inputs, so changes
    through ``.data``, new storages and train/eval are seen without a recompile going wrong."""
    model = two_layers(lora_dropout=0.0)
    compiled = torch.compile(model)
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    rng = random.Random(0)
    for step in range(24):
        kind = rng.choice([k for k in MUTABLE if params(model, k)])
        change = rng.choice(["data", "new_storage", "mode"])
        if change == "data":
            for p in params(model, kind):
                p.data.mul_(rng.choice([0.5, 1.7, -1.0]))
        elif change == "new_storage":
            for p in params(model, kind):
                p.data = p.data.clone() * 1.3
        else:
            model.train(rng.random() < 0.5)
        with torch.no_grad():
            assert max_rel(compiled(x), model(x)) < 1e-5, (step, change, kind)
