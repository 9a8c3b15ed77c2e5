"""Our DoRA layer against PEFT's own DoRA (``LoraConfig(use_dora=True)``): same math, our code."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import TARGETS, make_tiny_llama, max_rel, perturb_adapters
from peft import LoraConfig, get_peft_model
from torch import nn

from dora_plugins import DoraConfig
from dora_plugins.peft_layer import DoraLinear, DoraVariant

RTOL = 1e-5


def make_pair(dropout: float = 0.05, **kwargs):
    base = make_tiny_llama()
    config = dict(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=TARGETS, task_type="CAUSAL_LM", **kwargs)
    ref = get_peft_model(copy.deepcopy(base), LoraConfig(use_dora=True, **config))
    perturb_adapters(ref)
    ours = get_peft_model(copy.deepcopy(base), DoraConfig(**config))
    ours.load_state_dict(ref.state_dict())
    return ours, ref


def run_step(model, ids: torch.Tensor, seed: int):
    torch.manual_seed(seed)  # the same dropout masks for both models
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    return out.logits.detach(), out.loss.detach(), grads


def assert_same(ours, ref, train: bool, dropout: float):
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(3))
    ours.train(train)
    ref.train(train)
    logits, loss, grads = run_step(ours, ids, seed=7)
    ref_logits, ref_loss, ref_grads = run_step(ref, ids, seed=7)
    assert max_rel(logits, ref_logits) < RTOL
    assert max_rel(loss, ref_loss) < RTOL
    assert grads.keys() == ref_grads.keys() and len(grads) == 2 * 5 * 3
    for name, grad in grads.items():
        assert max_rel(grad, ref_grads[name]) < RTOL, name


def test_dora_config_runs_our_layer_not_peft_variant():
    ours, ref = make_pair()
    q_proj = ours.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, DoraLinear)
    assert isinstance(q_proj.lora_variant["default"], DoraVariant)
    ref_q_proj = ref.base_model.model.model.layers[0].self_attn.q_proj
    assert not isinstance(ref_q_proj.lora_variant["default"], DoraVariant)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dropout", [0.05, 0.0], ids=["paper_dropout", "no_dropout"])
def test_logits_loss_and_gradients_match_peft(train, dropout):
    ours, ref = make_pair(dropout)
    assert_same(ours, ref, train, dropout)


def test_eval_norm_cache_follows_weight_changes():
    ours, ref = make_pair(0.0)
    ids = torch.randint(0, 128, (1, 8))
    ours.eval(), ref.eval()
    with torch.no_grad():
        ours(input_ids=ids)  # fills the cache
        for model in (ours, ref):
            model.base_model.model.model.layers[0].mlp.up_proj.lora_A["default"].weight.add_(0.1)
        assert max_rel(ours(input_ids=ids).logits, ref(input_ids=ids).logits) < RTOL


def test_merge_and_unmerge_match_peft_and_restore_the_base():
    ours, ref = make_pair(0.0)
    ids = torch.randint(0, 128, (2, 10))
    ours.eval(), ref.eval()
    with torch.no_grad():
        unmerged = ours(input_ids=ids).logits
        base_weight = ours.base_model.model.model.layers[1].self_attn.v_proj.base_layer.weight.clone()
        ours.merge_adapter()
        ref.merge_adapter()
        assert max_rel(ours(input_ids=ids).logits, unmerged) < RTOL
        merged_weight = ours.base_model.model.model.layers[1].self_attn.v_proj.base_layer.weight
        ref_weight = ref.base_model.model.model.layers[1].self_attn.v_proj.base_layer.weight
        assert max_rel(merged_weight, ref_weight) < RTOL
        ours.unmerge_adapter()
        restored = ours.base_model.model.model.layers[1].self_attn.v_proj.base_layer.weight
        assert torch.allclose(restored, base_weight, rtol=1e-5, atol=1e-6)
        assert max_rel(ours(input_ids=ids).logits, unmerged) < RTOL


class OneLayer(nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.proj = nn.Linear(weight.shape[1], weight.shape[0], bias=True).to(weight.dtype)
        with torch.no_grad():
            self.proj.weight.copy_(weight)

    def forward(self, x):
        return self.proj(x)


def one_layer_dora(weight: torch.Tensor, detach_norm: bool):
    torch.manual_seed(0)
    model = get_peft_model(
        OneLayer(weight),
        DoraConfig(
            r=2, lora_alpha=3, lora_dropout=0.0, target_modules=["proj"], task_type=None, detach_norm=detach_norm
        ),
    )
    perturb_adapters(model)
    return model


def test_full_norm_gradient_passes_gradcheck():
    torch.manual_seed(0)
    model = one_layer_dora(torch.randn(5, 6, dtype=torch.float64), detach_norm=False)
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters() if p.requires_grad}
    names = list(params)
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)

    def fn(x, *values):
        return torch.func.functional_call(model, dict(zip(names, values, strict=True)), (x,))

    assert torch.autograd.gradcheck(fn, (x, *params.values()))


def test_detach_norm_changes_only_the_gradient():
    torch.manual_seed(0)
    weight = torch.randn(5, 6)
    x = torch.randn(3, 6)
    outputs, grads = [], []
    for detach in (True, False):
        model = one_layer_dora(weight, detach_norm=detach)
        out = model(x)
        out.pow(2).sum().backward()
        outputs.append(out.detach())
        grads.append(next(p.grad for n, p in model.named_parameters() if "lora_A" in n))
    assert torch.allclose(outputs[0], outputs[1])
    assert not torch.allclose(grads[0], grads[1])


def test_zero_row_in_base_weight_gives_no_nan_or_inf():
    weight = torch.randn(5, 6)
    weight[2] = 0.0
    model = one_layer_dora(weight, detach_norm=True)
    with torch.no_grad():  # B starts at zero, as after initialisation: the zero row has norm 0
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.zero_()
    for detach in (True, False):
        model.base_model.model.proj.lora_magnitude_vector["default"].detach_norm = detach
        out = model(torch.randn(4, 6))
        out.sum().backward()
        assert torch.isfinite(out).all()
        for name, param in model.named_parameters():
            if param.requires_grad:
                assert torch.isfinite(param.grad).all(), name
        model.zero_grad()
