"""Our layer on the other ways PEFT models are built, loaded and switched, each against stock PEFT's DoRA."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import TARGETS, make_tiny_llama, max_rel, perturb_adapters
from peft import LoraConfig, PeftModel, get_peft_model, inject_adapter_in_model
from torch import nn

from dora_plugins import DoraConfig, load_adapter
from dora_plugins.peft_layer import DoraLinear

IDS = torch.arange(24).reshape(2, 12) % 128
CONFIG = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=IDS).logits


@pytest.fixture
def saved(tmp_path):
    """A stock PEFT DoRA adapter with non-zero B on disk, and the logits stock PEFT gives with it."""
    stock = get_peft_model(make_tiny_llama(), LoraConfig(use_dora=True, **CONFIG))
    perturb_adapters(stock)
    stock.save_pretrained(tmp_path)
    return tmp_path, logits(stock)


def q_proj(model):
    return model.base_model.model.model.layers[0].self_attn.q_proj


def test_low_cpu_mem_usage_injection_builds_on_meta_and_loads_with_assign():
    def fresh():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 6))

    config = DoraConfig(target_modules=["0"], task_type=None, r=2, lora_dropout=0.0)
    reference = inject_adapter_in_model(config, fresh())
    perturb_adapters(reference)
    model = inject_adapter_in_model(config, fresh(), low_cpu_mem_usage=True)
    assert isinstance(model[0], DoraLinear) and model[0].lora_magnitude_vector["default"].weight.is_meta
    model.load_state_dict(reference.state_dict(), assign=True)
    x = torch.randn(3, 8)
    assert max_rel(model(x), reference(x)) < 1e-6


@pytest.mark.parametrize("low_cpu_mem_usage", [False, True])
def test_stock_adapter_loads_into_our_layer_by_every_route(saved, low_cpu_mem_usage):
    path, expected = saved
    ours = load_adapter(make_tiny_llama(), path, low_cpu_mem_usage=low_cpu_mem_usage)
    assert isinstance(q_proj(ours), DoraLinear) and max_rel(logits(ours), expected) < 1e-5
    config = DoraConfig.from_pretrained(path)
    direct = PeftModel.from_pretrained(make_tiny_llama(), path, config=config, low_cpu_mem_usage=low_cpu_mem_usage)
    assert isinstance(q_proj(direct), DoraLinear) and max_rel(logits(direct), expected) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_model_to_another_dtype_computes_as_stock_peft_does(saved, dtype):
    path, _ = saved
    ours = load_adapter(make_tiny_llama(), path).to(dtype)
    stock = PeftModel.from_pretrained(make_tiny_llama(), path).to(dtype)
    assert q_proj(ours).lora_magnitude_vector["default"].weight.dtype == dtype
    tolerance = 1e-12 if dtype == torch.float64 else 2e-2
    assert max_rel(logits(ours).double(), logits(stock).double()) < tolerance


def test_several_adapters_set_adapter_scale_and_disable_follow_stock_peft(saved):
    path, _ = saved

    def build(config_cls):
        model = get_peft_model(make_tiny_llama(), config_cls(**CONFIG), adapter_name="first")
        model.add_adapter("second", config_cls(**{**CONFIG, "r": 2}))
        perturb_adapters(model, seed=4)
        return model

    ours, stock = build(DoraConfig), build(lambda **kw: LoraConfig(use_dora=True, **kw))
    stock.load_state_dict(ours.state_dict())
    for step in ("first", "second", "scale", "unscale", "disabled"):
        for model in (ours, stock):
            if step in ("first", "second"):
                model.set_adapter(step)
            elif step == "scale":
                for module in model.modules():
                    if hasattr(module, "scale_layer"):
                        module.scale_layer(0.5)
            elif step == "unscale":
                for module in model.modules():
                    if hasattr(module, "unscale_layer"):
                        module.unscale_layer()
        if step == "disabled":
            with ours.disable_adapter(), stock.disable_adapter():
                assert max_rel(logits(ours), logits(stock)) < 1e-5
            assert max_rel(logits(ours), logits(stock)) < 1e-5
        else:
            assert max_rel(logits(ours), logits(stock)) < 1e-5, step


def test_load_state_dict_with_assign_replaces_every_tensor_and_is_seen(saved):
    path, expected = saved
    ours = get_peft_model(make_tiny_llama(), DoraConfig(**CONFIG))
    stock = PeftModel.from_pretrained(make_tiny_llama(), path)
    ours.load_state_dict(copy.deepcopy(stock.state_dict()), assign=True)
    assert max_rel(logits(ours), expected) < 1e-5
