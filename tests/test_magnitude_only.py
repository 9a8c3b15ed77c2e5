"""Magnitude-only modules: ``W' = m * W0 / ||W0||`` beside DoRA modules, exact, trained, saved, loaded, merged."""

from __future__ import annotations

import copy
import dataclasses
import json
import warnings

import pytest
import torch
from helpers import make_tiny_llama, max_rel, no_cpu_repacking, perturb_adapters
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from torch import nn

from dora_plugins import DoraConfig, adapter_config, load_adapter
from dora_plugins.cli import main as dora_main
from dora_plugins.errors import ConfigError
from dora_plugins.merge import merge_adapter

DORA = ["q_proj", "k_proj", "v_proj"]
MAGNITUDE_ONLY = ["o_proj", "gate_proj", "up_proj", "down_proj"]
IDS = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(3))


class OneLayer(nn.Module):
    """``proj``, a biased linear layer holding ``weight``."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.proj = nn.Linear(weight.shape[1], weight.shape[0]).to(weight.dtype)
        with torch.no_grad():
            self.proj.weight.copy_(weight)

    def forward(self, x):
        return self.proj(x)


def qkv_config(**overrides) -> DoraConfig:
    config = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=DORA, magnitude_only_modules=MAGNITUDE_ONLY)
    return DoraConfig(**{**config, **overrides})


def adapted(base, config=None, seed: int = 1):
    """``base`` with the config's adapter, B of the DoRA modules and every magnitude moved away from the start."""
    model = get_peft_model(base, config or qkv_config())
    perturb_adapters(model, seed)
    return model


def layers(model) -> dict[str, torch.nn.Module]:
    """The adapted layers by module name (``model.layers.0.self_attn.o_proj``)."""
    return {
        name.removeprefix("base_model.model."): module
        for name, module in model.named_modules()
        if hasattr(module, "lora_magnitude_vector") and "default" in module.lora_magnitude_vector
    }


def logits(model, ids=IDS) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


def dense_reference(base, model):
    """``base`` with every adapted weight replaced by W', computed densely: DoRA's eq. 1, or ``m * W0 / ||W0||``."""
    reference = copy.deepcopy(base)
    for name, layer in layers(model).items():
        w0 = layer.get_base_layer().weight.detach()
        m = layer.lora_magnitude_vector["default"].weight.detach().unsqueeze(1)  # (out, 1)
        if name.rsplit(".", 1)[-1] in MAGNITUDE_ONLY:
            v = w0
        else:
            a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            v = w0 + layer.scaling["default"] * b.detach() @ a.detach()
        with torch.no_grad():
            reference.get_submodule(name).weight.copy_(m * v / v.norm(dim=1, keepdim=True))
    return reference


def factors_of(model, kinds=MAGNITUDE_ONLY) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{factor}": getattr(layer, factor)["default"].weight.detach().clone()
        for name, layer in layers(model).items()
        if name.rsplit(".", 1)[-1] in kinds
        for factor in ("lora_A", "lora_B")
    }


def test_magnitude_only_and_dora_modules_equal_a_dense_float64_reference():
    base = make_tiny_llama(dtype=torch.float64)
    model = adapted(copy.deepcopy(base))
    only = {
        n.rsplit(".", 1)[-1]
        for n, layer in layers(model).items()
        if layer.lora_magnitude_vector["default"].magnitude_only
    }
    assert only == set(MAGNITUDE_ONLY)
    assert max_rel(logits(model), logits(dense_reference(base, model))) < 1e-12
    with torch.no_grad():  # a magnitude-only module never reads its factors, whatever they hold
        for name, layer in layers(model).items():
            if name.endswith("o_proj"):
                layer.lora_A["default"].weight.normal_()
                layer.lora_B["default"].weight.normal_()
    for train, grad in ((True, True), (False, True), (False, False)):  # the training, eval and inference paths
        model.train(train)
        with torch.set_grad_enabled(grad):
            out = model(input_ids=IDS).logits
        assert max_rel(out.detach(), logits(dense_reference(base, model))) < 1e-12


@pytest.mark.parametrize("detach_norm", [True, False])
def test_a_biased_layer_output_and_gradients_equal_the_dense_reference(detach_norm):
    torch.manual_seed(0)
    weight = torch.randn(5, 6, dtype=torch.float64)
    model = get_peft_model(
        OneLayer(weight),
        DoraConfig(
            target_modules=[],
            magnitude_only_modules=["proj"],
            lora_dropout=0.0,
            task_type=None,
            detach_norm=detach_norm,
        ),
    )
    perturb_adapters(model)
    layer = model.base_model.model.proj
    m = layer.lora_magnitude_vector["default"].weight
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    model.train()
    out = model(x)
    out.pow(2).sum().backward()
    m_ref = m.detach().clone().requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    ref = x_ref @ (m_ref.unsqueeze(1) * weight / weight.norm(dim=1, keepdim=True)).t() + layer.get_base_layer().bias
    ref.pow(2).sum().backward()
    assert max_rel(out.detach(), ref.detach()) < 1e-12
    assert max_rel(x.grad, x_ref.grad) < 1e-12
    assert max_rel(m.grad, m_ref.grad) < 1e-12


def test_dropout_acts_on_the_base_path_as_in_the_papers_code_and_not_at_all_on_the_lora_branch():
    """The paper's code: ``y = W0 x + (g - 1) W0 drop(x) + b`` for its magnitude-only modules; 'lora_branch'
    drops only the LoRA input, which a magnitude-only module does not have."""
    torch.manual_seed(0)
    x = torch.randn(4, 6, dtype=torch.float64)
    outputs = {}
    for mode in ("paper", "lora_branch"):
        only = dict(target_modules=[], magnitude_only_modules=["proj"], task_type=None)
        config = DoraConfig(**only, lora_dropout=0.5, dropout_mode=mode)
        model = get_peft_model(OneLayer(torch.randn(5, 6, dtype=torch.float64)), config)
        perturb_adapters(model)
        expected = model.eval()(x)
        torch.manual_seed(1)
        outputs[mode] = (model.train()(x), expected)
    assert torch.equal(*outputs["lora_branch"])
    assert max_rel(*outputs["paper"]) > 1e-3


def test_saved_factors_are_rank_1_zeros_and_not_parameters():
    model = adapted(make_tiny_llama())
    for name, layer in layers(model).items():
        kind = name.rsplit(".", 1)[-1]
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        if kind in MAGNITUDE_ONLY:
            assert a.shape == (1, layer.in_features) and b.shape == (layer.out_features, 1)
            assert not a.any() and not b.any() and not isinstance(a, torch.nn.Parameter)
            assert layer.lora_magnitude_vector["default"].magnitude_only
        else:
            assert a.shape[0] == 4 and isinstance(a, torch.nn.Parameter)
    trainable = {n.split(".")[-3] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"lora_A", "lora_B", "lora_magnitude_vector"}
    factors = [n for n, p in model.named_parameters() if "lora_A" in n or "lora_B" in n]
    assert all(n.split(".")[-4] in DORA for n in factors) and len(factors) == 2 * 3 * 2


def test_training_moves_only_the_magnitude_of_magnitude_only_modules():
    model = adapted(make_tiny_llama())
    model.base_model.set_adapter("default")  # PEFT's switch marks every adapter layer trainable again
    for layer in layers(model).values():
        layer.lora_A.requires_grad_(True)
        layer.lora_B.requires_grad_(True)
    frozen, dora_factors = factors_of(model), factors_of(model, DORA)
    magnitudes = {n: p.detach().clone() for n, p in model.named_parameters() if "magnitude" in n}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    model.train()
    for _ in range(3):
        model(input_ids=IDS, labels=IDS).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = factors_of(model)
    assert all(torch.equal(after[n], frozen[n]) for n in frozen) and not any(t.any() for t in after.values())
    assert all(not torch.equal(t, dora_factors[n]) for n, t in factors_of(model, DORA).items() if "lora_B" in n)
    moved = {
        n.split(".")[-4] for n, p in model.named_parameters() if "magnitude" in n and not torch.equal(p, magnitudes[n])
    }
    assert moved == set(DORA + MAGNITUDE_ONLY)


@pytest.mark.parametrize("dropout", [0.0, 0.1], ids=["no_dropout", "paper_dropout"])
def test_stock_peft_loads_the_adapter_and_trains_it_the_same_way(tmp_path, dropout):
    """Stock PEFT reads a rank-1 DoRA adapter with B = 0: the same outputs and magnitude gradients; A = B = 0
    stays 0 there too."""
    model = adapted(make_tiny_llama(), qkv_config(lora_dropout=dropout))
    model.save_pretrained(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stock = PeftModel.from_pretrained(make_tiny_llama(), tmp_path, is_trainable=True)
    assert any("['magnitude_only_modules']" in str(w.message) and "ignored" in str(w.message) for w in caught)
    assert type(stock.peft_config["default"]).__name__ == "LoraConfig"
    assert type(layers(stock)["model.layers.0.self_attn.o_proj"]).__module__.startswith("peft.")
    results = []
    for peft_model in (model, stock):
        peft_model.train()
        torch.manual_seed(7)  # the same dropout masks
        out = peft_model(input_ids=IDS, labels=IDS)
        out.loss.backward()
        grads = {n: p.grad for n, p in peft_model.named_parameters() if p.requires_grad}
        results.append((out.logits.detach(), grads))
    (ours, our_grads), (theirs, their_grads) = results
    assert max_rel(ours, theirs) < 1e-5
    assert our_grads.keys() <= their_grads.keys()
    assert all(max_rel(g, their_grads[n]) < 1e-5 for n, g in our_grads.items())
    extra = {n: g for n, g in their_grads.items() if n not in our_grads}
    assert len(extra) == 2 * 2 * 4 and not any(g.any() for g in extra.values())  # zero factors get zero gradients


@pytest.mark.parametrize("low_cpu_mem_usage", [False, True])
def test_save_and_load_keep_the_magnitude_only_modules(tmp_path, low_cpu_mem_usage):
    model = adapted(make_tiny_llama())
    expected = logits(model)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert (saved["peft_type"], saved["use_dora"], saved["magnitude_only_modules"]) == ("LORA", True, MAGNITUDE_ONLY)
    assert set(saved["target_modules"]) == set(DORA + MAGNITUDE_ONLY)
    assert saved["rank_pattern"] == dict.fromkeys(MAGNITUDE_ONLY, 1)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    assert not any(t.any() for k, t in tensors.items() if "o_proj.lora_" in k and "magnitude" not in k)
    config = DoraConfig.from_pretrained(tmp_path)
    assert config.magnitude_only_modules == MAGNITUDE_ONLY and set(config.target_modules) == set(
        saved["target_modules"]
    )
    assert config.rank_pattern == saved["rank_pattern"]
    for loaded in (
        load_adapter(make_tiny_llama(), tmp_path, low_cpu_mem_usage=low_cpu_mem_usage),
        PeftModel.from_pretrained(make_tiny_llama(), tmp_path, config=config, low_cpu_mem_usage=low_cpu_mem_usage),
    ):
        assert layers(loaded)["model.layers.1.mlp.down_proj"].lora_magnitude_vector["default"].magnitude_only
        assert max_rel(logits(loaded), expected) < 1e-6


def test_merge_folds_m_w0_over_its_norm_and_unmerge_restores_w0():
    model = adapted(make_tiny_llama())
    expected = logits(model)
    o_proj = layers(model)["model.layers.0.self_attn.o_proj"]
    w0 = o_proj.get_base_layer().weight.detach().clone()
    model.merge_adapter()
    m = o_proj.lora_magnitude_vector["default"].weight.detach().unsqueeze(1)
    assert max_rel(o_proj.get_base_layer().weight, m * w0 / w0.norm(dim=1, keepdim=True)) < 1e-6
    assert max_rel(logits(model), expected) < 1e-5
    model.unmerge_adapter()
    assert torch.allclose(o_proj.get_base_layer().weight, w0, rtol=1e-5, atol=1e-6)


def test_dora_merge_writes_the_model_the_adapter_computes(tmp_path):
    from transformers import AutoModelForCausalLM

    base = make_tiny_llama()
    base.save_pretrained(tmp_path / "base")
    model = adapted(base)
    expected = logits(model)
    model.save_pretrained(tmp_path / "adapter")
    merged = merge_adapter(tmp_path / "base", tmp_path / "adapter", tmp_path / "merged")
    assert max_rel(logits(AutoModelForCausalLM.from_pretrained(merged)), expected) < 1e-5
    argv = ["merge", "--base", str(tmp_path / "base"), "--adapter", str(tmp_path / "adapter")]
    assert dora_main([*argv, "--output", str(tmp_path / "cli")]) == 0
    assert max_rel(logits(AutoModelForCausalLM.from_pretrained(tmp_path / "cli")), expected) < 1e-5


def test_dora_analyze_reads_a_magnitude_only_module_as_dora_with_b_zero(tmp_path):
    import csv

    base = make_tiny_llama(dtype=torch.float64)
    base.save_pretrained(tmp_path / "base")
    model = adapted(copy.deepcopy(base))
    model.save_pretrained(tmp_path / "run" / "checkpoint-5")
    argv = ["analyze", "--base", str(tmp_path / "base"), str(tmp_path / "run" / "checkpoint-5")]
    assert dora_main([*argv, "--output", str(tmp_path / "out")]) == 0
    with open(tmp_path / "out" / "dynamics.csv", newline="") as file:
        rows = {row["module"]: row for row in csv.DictReader(file)}
    reference = dense_reference(base, model)
    assert set(rows) == set(layers(model))
    for name, layer in layers(model).items():
        w0 = layer.get_base_layer().weight
        w = reference.get_submodule(name).weight
        delta_m = (w.norm(dim=1) - w0.norm(dim=1)).abs().mean().item()
        delta_d = (1 - torch.nn.functional.cosine_similarity(w, w0, dim=1)).mean().item()
        assert float(rows[name]["delta_m"]) == pytest.approx(delta_m, rel=1e-9)
        assert float(rows[name]["delta_d"]) == pytest.approx(delta_d, rel=1e-9, abs=1e-15)
        if name.rsplit(".", 1)[-1] in MAGNITUDE_ONLY:
            assert float(rows[name]["delta_d"]) == pytest.approx(0, abs=1e-15)  # only the magnitude moved


def test_regex_modules_select_the_same_modules_as_names_and_survive_a_round_trip(tmp_path):
    by_name = adapted(make_tiny_llama())
    regex = qkv_config(target_modules=r".*\.(q|k|v)_proj", magnitude_only_modules=r".*\.(o|gate|up|down)_proj")
    by_regex = adapted(make_tiny_llama(), regex)
    only = {n for n, layer in layers(by_regex).items() if layer.lora_magnitude_vector["default"].magnitude_only}
    assert only == {n for n in layers(by_name) if n.rsplit(".", 1)[-1] in MAGNITUDE_ONLY}
    assert max_rel(logits(by_regex), logits(by_name)) < 1e-6
    by_regex.save_pretrained(tmp_path)
    again = DoraConfig.from_pretrained(tmp_path)
    assert (again.target_modules, again.rank_pattern) == (regex.target_modules, regex.rank_pattern)
    assert max_rel(logits(load_adapter(make_tiny_llama(), tmp_path)), logits(by_regex)) < 1e-6


def test_a_config_built_again_from_its_fields_is_the_same_config():
    config = qkv_config(rank_pattern={"q_proj": 2})
    again = dataclasses.replace(config)
    assert (set(again.target_modules), again.rank_pattern) == (set(config.target_modules), config.rank_pattern)
    assert list(config.rank_pattern) == [*MAGNITUDE_ONLY, "q_proj"]  # ours first: PEFT takes the first match
    assert "magnitude_only_modules" not in DoraConfig().to_dict()  # stock PEFT would warn about an unknown key


def test_the_dora_qkv_preset_is_the_papers_qkv_variant():
    config = adapter_config("dora_qkv")
    assert isinstance(config, DoraConfig) and (config.r, config.lora_alpha) == (32, 64)
    assert config.magnitude_only_modules == MAGNITUDE_ONLY
    assert set(config.target_modules) == set(DORA + MAGNITUDE_ONLY)
    assert adapter_config("dora_qkv", r=8).r == 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(magnitude_only_modules=["o_proj", "q_proj"]), r"\['q_proj'\] is in both target_modules"),
        (dict(magnitude_only_modules=["self_attn.q_proj"]), r"\['q_proj'\] is in both target_modules"),
        (dict(magnitude_only_modules=5), "must be a list of module names .* or a regex string, got 5"),
        (dict(magnitude_only_modules=["o_proj", 3]), r"got \['o_proj', 3\]"),
        (dict(magnitude_only_modules=[]), r"got \[\]"),
        (dict(magnitude_only_modules=""), "matches no module; leave it unset"),
        (dict(magnitude_only_modules="o_proj("), "not a valid regular expression"),
        (
            dict(target_modules="all-linear"),
            "needs the DoRA modules listed explicitly, got target_modules='all-linear'",
        ),
        (dict(target_modules=None), "needs the DoRA modules listed explicitly, got target_modules=None"),
        (dict(init_lora_weights="pissa"), "init_lora_weights='pissa' cannot be used with magnitude_only_modules"),
    ],
    ids=[
        "overlap",
        "overlap_by_suffix",
        "int",
        "non_string",
        "empty",
        "empty_regex",
        "bad_regex",
        "all_linear",
        "none",
        "pissa",
    ],
)
def test_bad_magnitude_only_modules_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        qkv_config(**kwargs)


def test_a_layer_our_layer_does_not_run_cannot_be_magnitude_only():
    """PEFT's own DoRA would train its factors; other modules of that kind keep PEFT's DoRA."""
    with pytest.raises(ConfigError, match=r"Module 'model.embed_tokens' \(Embedding\) cannot be magnitude-only"):
        get_peft_model(make_tiny_llama(), qkv_config(magnitude_only_modules=["embed_tokens"]))
    model = get_peft_model(make_tiny_llama(), qkv_config(target_modules=["embed_tokens", *DORA]))
    assert type(model.base_model.model.model.embed_tokens).__module__.startswith("peft.")


def test_a_module_that_two_regexes_both_match_is_refused_by_name():
    config = qkv_config(target_modules=r".*_proj", magnitude_only_modules=r".*\.o_proj")
    with pytest.raises(ConfigError, match=r"Module 'model.layers.0.self_attn.o_proj' matches both target_modules"):
        get_peft_model(make_tiny_llama(), config)


def test_a_4bit_base_computes_and_trains_as_stock_peft_does(tmp_path):
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (pip install dora-plugins[kbit])")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    make_tiny_llama().save_pretrained(tmp_path)
    config = qkv_config()
    stock_config = LoraConfig(
        use_dora=True, r=4, lora_alpha=8, lora_dropout=0.0, target_modules=DORA + MAGNITUDE_ONLY,
        rank_pattern=config.rank_pattern, task_type="CAUSAL_LM",
    )  # fmt: skip
    models = []
    for peft_config in (config, stock_config):
        quantization = BitsAndBytesConfig(load_in_4bit=True)
        models.append(
            get_peft_model(
                AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=quantization), peft_config
            )
        )
    ours, stock = (no_cpu_repacking(m) for m in models)  # stock PEFT reads a repacked weight scrambled
    perturb_adapters(ours)
    stock.load_state_dict({k: v for k, v in ours.state_dict().items() if "lora_" in k}, strict=False)
    assert layers(ours)["model.layers.0.mlp.up_proj"].lora_magnitude_vector["default"].magnitude_only
    grads = []
    for model in (ours, stock):
        model.train()
        out = model(input_ids=IDS, labels=IDS)
        out.loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if "magnitude" in n})
    assert max_rel(logits(ours), logits(stock)) < 1e-5
    assert all(max_rel(g, grads[1][n]) < 1e-5 for n, g in grads[0].items())
