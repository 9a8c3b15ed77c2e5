"""The DoRA math (dora_plugins.dora, dora_plugins.kernels) against dense float64 references, and what it saves."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import TARGETS, make_tiny_llama, max_rel, perturb_adapters
from peft import LoraConfig, get_peft_model
from torch import nn

from dora_plugins import DoraConfig, dora
from dora_plugins.dora import NORM_EPS, dora_forward, dropout_noise, weight_norm
from dora_plugins.inference import inference_cache

OUT, IN, R, S = 12, 10, 3, 1.7


def parts(seed: int = 0, bias: bool = False):
    """Random W0, bias, A, B and a magnitude away from the row norms, in float32."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(OUT, IN, generator=gen)
    return dict(
        weight=weight,
        bias=torch.randn(OUT, generator=gen) if bias else None,
        lora_A=torch.randn(R, IN, generator=gen).requires_grad_(),
        lora_B=torch.randn(OUT, R, generator=gen).mul_(0.3).requires_grad_(),
        magnitude=(weight.norm(dim=1) * (1 + 0.2 * torch.randn(OUT, generator=gen))).requires_grad_(),
    )


def dense_reference(x, noise, weight, bias, lora_A, lora_B, magnitude, detach_norm, s=S, mode="paper"):
    """The paper's formula in float64 with plain autograd: the full out x in matrix, no tricks.

    ``mode="lora_branch"`` drops the LoRA input only: ``g * (W0 x + s B A drop(x)) + bias``.
    """
    x, weight, lora_A, lora_B, magnitude = (t.double() for t in (x, weight, lora_A, lora_B, magnitude))
    bias = 0.0 if bias is None else bias.double()
    norm = torch.linalg.norm(weight + s * lora_B @ lora_A, dim=1)
    g = magnitude / (norm.detach() if detach_norm else norm)
    x_d = x if noise is None else x * noise.double()
    if noise is None or mode == "lora_branch":
        return g * (x @ weight.t() + s * x_d @ lora_A.t() @ lora_B.t()) + bias
    return x @ weight.t() + bias + (g - 1) * (x_d @ weight.t()) + g * s * (x_d @ lora_A.t() @ lora_B.t())


def ours(x, p, detach_norm, dropout=None, mode="paper"):
    norm = weight_norm(p["weight"], p["lora_A"], p["lora_B"], S, detach=detach_norm)
    result = nn.functional.linear(x, p["weight"], p["bias"])
    return dora_forward(
        x,
        result,
        weight=p["weight"],
        bias=p["bias"],
        lora_A=p["lora_A"],
        lora_B=p["lora_B"],
        scaling=S,
        magnitude=p["magnitude"],
        norm=norm,
        dropout=dropout,
        dropout_mode=mode,
    )


def grads_of(y, tensors, seed=5):
    grad_out = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.autograd.grad(y, tensors, grad_out.to(y.dtype))


@pytest.mark.parametrize(
    "block_elements",
    [dora.BLOCK_ELEMENTS, 2 * IN + 1, 5 * IN],
    ids=["one_block", "blocks_of_2_rows", "blocks_of_5_rows_last_of_2"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_row_norm_equals_the_dense_row_norm(monkeypatch, block_elements, dtype):
    """Every block, the last one shorter too, is written into one reused buffer: no block may see another's rows."""
    monkeypatch.setattr(dora, "BLOCK_ELEMENTS", block_elements)
    p = {k: v.detach().to(dtype) for k, v in parts().items() if v is not None}
    dense = torch.linalg.norm(p["weight"].double() + S * p["lora_B"].double() @ p["lora_A"].double(), dim=1)
    norm = weight_norm(p["weight"], p["lora_A"], p["lora_B"], S)
    assert norm.dtype == torch.float32 and norm.grad_fn is None
    assert max_rel(norm.double(), dense) < 1e-6


def test_full_norm_gradient_passes_gradcheck_across_blocks(monkeypatch):
    monkeypatch.setattr(dora, "BLOCK_ELEMENTS", 3 * IN)  # 3 rows per block: 4 blocks of 12 rows
    p = {k: v.double().detach().requires_grad_() for k, v in parts().items() if v is not None}
    assert torch.autograd.gradcheck(
        lambda w, a, b: weight_norm(w, a, b, S, detach=False), (p["weight"], p["lora_A"], p["lora_B"])
    )


@pytest.mark.parametrize(
    ("p_drop", "mode"), [(0.0, "paper"), (0.3, "paper"), (0.3, "lora_branch")], ids=["no_dropout", "paper", "branch"]
)
@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("detach_norm", [True, False], ids=["detached_norm", "full_norm"])
def test_output_and_gradients_match_the_dense_formula(p_drop, mode, bias, detach_norm):
    p = parts(bias=bias)
    x = torch.randn(2, 7, IN, generator=torch.Generator().manual_seed(1)).requires_grad_()
    dropout = nn.Dropout(p_drop) if p_drop else None
    torch.manual_seed(3)
    y = ours(x, p, detach_norm, dropout, mode)
    torch.manual_seed(3)
    noise = dropout(torch.ones_like(x)) if dropout else None
    weights = (p["weight"], p["bias"], p["lora_A"], p["lora_B"], p["magnitude"])
    ref = dense_reference(x, noise, *weights, detach_norm, mode=mode)
    assert max_rel(y.double(), ref) < 1e-6
    wrt = [x, p["lora_A"], p["lora_B"], p["magnitude"]]
    for got, want in zip(grads_of(y, wrt), grads_of(ref, wrt), strict=True):
        assert max_rel(got.double(), want) < 1e-5


@pytest.mark.parametrize("bias", [False, True], ids=["saves_output", "saves_inner"])
def test_zero_magnitude_keeps_an_exact_gradient(bias):
    """``y / g`` is undefined where g == 0: that row's magnitude gradient must still be exact."""
    p = parts(bias=bias)
    with torch.no_grad():
        p["magnitude"][4] = 0.0
    x = torch.randn(6, IN, generator=torch.Generator().manual_seed(1)).requires_grad_()
    y = ours(x, p, detach_norm=True)
    ref = dense_reference(x, None, p["weight"], p["bias"], p["lora_A"], p["lora_B"], p["magnitude"], True)
    assert max_rel(y.double(), ref) < 1e-6
    got, want = grads_of(y, [p["magnitude"]])[0], grads_of(ref, [p["magnitude"]])[0]
    assert want[4].abs() > 1e-3 and max_rel(got.double(), want) < 1e-5


def test_zero_base_row_gives_finite_norm():
    p = parts()
    p["weight"][2] = 0.0
    with torch.no_grad():
        p["lora_B"].zero_()
    norm = weight_norm(p["weight"], p["lora_A"], p["lora_B"], S)
    assert norm[2] == NORM_EPS and torch.isfinite(norm).all()


@pytest.mark.parametrize("contiguous", [True, False])
def test_dropout_noise_is_the_draw_dropout_makes(contiguous):
    """Same RNG use as PEFT's ``dropout(x)``: the CPU shortcut and the module-on-ones path agree with it."""
    x = torch.randn(5, 33, 16) if contiguous else torch.randn(16, 33, 5).transpose(0, 2)
    dropout = nn.Dropout(0.25)
    torch.manual_seed(0)
    expected = dropout(x)
    torch.manual_seed(0)
    noise = dropout_noise(x, dropout)
    torch.manual_seed(0)
    on_ones = dropout(torch.ones_like(x))
    assert torch.equal(x * noise, expected) and torch.equal(noise, on_ones)
    assert 0 < (noise == 0).float().mean() < 0.5


def saved_storages(fn):
    """Run ``fn`` and return ``(result, [(storage pointer, shape, dtype)])`` for every tensor autograd saved."""
    saved = []

    def pack(tensor):
        saved.append((tensor.untyped_storage().data_ptr(), tuple(tensor.shape), tensor.dtype))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        return fn(), saved


def test_without_dropout_the_only_output_sized_activation_is_the_output_itself():
    p = parts()
    x = torch.randn(40, IN, requires_grad=True)
    y, saved = saved_storages(lambda: ours(x, p, detach_norm=True))
    output_sized = {ptr for ptr, shape, _ in saved if shape == (40, OUT)}
    assert output_sized == {y.untyped_storage().data_ptr()}  # shared with whoever else keeps y


def test_with_a_bias_one_output_sized_tensor_other_than_the_output_is_saved():
    """``(y - bias) / g`` cancels where g is small, so a biased layer keeps ``inner`` instead of its output."""
    p = parts(bias=True)
    x = torch.randn(40, IN, requires_grad=True)
    y, saved = saved_storages(lambda: ours(x, p, detach_norm=True))
    output_sized = {ptr for ptr, shape, _ in saved if shape == (40, OUT)}
    assert len(output_sized) == 1 and y.untyped_storage().data_ptr() not in output_sized


def test_paper_dropout_saves_a_bool_mask_and_one_output_sized_tensor():
    p = parts()
    x = torch.randn(40, IN, requires_grad=True)
    torch.manual_seed(0)
    _, saved = saved_storages(lambda: ours(x, p, detach_norm=True, dropout=nn.Dropout(0.1)))
    x_ptr = x.untyped_storage().data_ptr()
    others = [dtype for ptr, shape, dtype in saved if shape == (40, IN) and ptr != x_ptr]
    assert others == [torch.bool]  # the mask; drop(x) is rebuilt from x in backward
    assert len([1 for _, shape, _ in saved if shape == (40, OUT)]) == 1  # W0 drop(x)


@pytest.mark.parametrize(("p_drop", "mode"), [(0.0, "paper"), (0.3, "paper"), (0.3, "lora_branch")])
def test_inference_path_equals_the_training_path(p_drop, mode):
    p = parts(bias=True)
    x = torch.randn(3, 5, IN)
    dropout = nn.Dropout(p_drop) if p_drop else None
    torch.manual_seed(2)
    with_grad = ours(x, p, detach_norm=True, dropout=dropout, mode=mode)
    torch.manual_seed(2)
    with torch.no_grad():
        without = ours(x, p, detach_norm=True, dropout=dropout, mode=mode)
    assert with_grad.grad_fn is not None and without.grad_fn is None
    assert torch.equal(with_grad.detach(), without)


@pytest.mark.parametrize("dropout", [0.0, 0.05], ids=["no_dropout", "paper_dropout"])
@pytest.mark.parametrize("fp32_adapters", [True, False], ids=["fp32_adapters", "bf16_adapters"])
def test_bf16_model_matches_the_fp32_reference(dropout, fp32_adapters):
    """A bf16 model (adapters in fp32, PEFT's default, or in bf16) stays within bf16 rounding of PEFT in fp32,
    and no further from it than PEFT's own DoRA in bf16."""
    base = make_tiny_llama()
    config = dict(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=TARGETS, task_type="CAUSAL_LM")
    ref = get_peft_model(copy.deepcopy(base), LoraConfig(use_dora=True, **config))
    perturb_adapters(ref)
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(3))
    results = {}
    for name, peft_config in (
        ("ref", None),
        ("ours", DoraConfig(**config)),
        ("peft_bf16", LoraConfig(use_dora=True, **config)),
    ):
        model = ref
        if peft_config is not None:
            model = get_peft_model(
                copy.deepcopy(base).to(torch.bfloat16), peft_config, autocast_adapter_dtype=fp32_adapters
            )
            model.load_state_dict(ref.state_dict())
        model.train()
        torch.manual_seed(7)
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        grads = {n: p.grad.float() for n, p in model.named_parameters() if p.requires_grad}
        results[name] = (out.logits.float(), grads)
    errors = {}
    for name in ("ours", "peft_bf16"):
        logits, grads = results[name]
        errors[name] = (
            max_rel(logits, results["ref"][0]),
            max(max_rel(g, results["ref"][1][n]) for n, g in grads.items()),
        )
    assert errors["ours"][0] < 2e-2 and errors["ours"][1] < 5e-2, errors
    assert errors["ours"][0] < 2 * errors["peft_bf16"][0] and errors["ours"][1] < 2 * errors["peft_bf16"][1], errors


def test_inference_constants_are_computed_once_inside_the_cache_and_never_outside(monkeypatch):
    """Inside ``inference_cache()`` (every ``generate()``) g, s g B and (1 - g) bias are computed once per layer;
    outside, every call computes them, so an in-place change through ``.data`` is seen at once."""
    calls = []
    original = dora.weight_norm
    monkeypatch.setattr(dora, "weight_norm", lambda *a, **k: calls.append(1) or original(*a, **k))
    model = nn.Sequential()
    model.add_module("proj", nn.Linear(IN, OUT))
    model = get_peft_model(model, DoraConfig(r=R, lora_alpha=5, target_modules=["proj"], task_type=None)).eval()
    perturb_adapters(model)
    proj = model.base_model.model.proj
    x = torch.randn(4, IN)

    def check():
        with torch.no_grad():
            got = model(x)
        p = (
            proj.base_layer.weight,
            proj.base_layer.bias,
            proj.lora_A["default"].weight,
            proj.lora_B["default"].weight,
            proj.lora_magnitude_vector["default"].weight,
        )
        assert max_rel(got.double(), dense_reference(x, None, *p, True, s=proj.scaling["default"])) < 1e-6

    calls.clear()  # the magnitude's initialisation computed one norm
    with inference_cache():
        check(), check(), check()
    assert len(calls) == 1
    check()
    proj.lora_B["default"].weight.data.mul_(1.5)  # no version bump: only recomputing can see it
    check()
    proj.base_layer.weight.data.mul_(2)
    check()
    proj.scaling["default"] = 0.25
    check()
    assert len(calls) == 5


def test_gradient_checkpointing_replays_the_same_dropout_and_gradients():
    """Checkpointing reruns the forward in backward: the mask (and so every gradient) must be the same."""
    config = DoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=TARGETS)
    plain = get_peft_model(make_tiny_llama(), config)
    perturb_adapters(plain)
    checkpointed = get_peft_model(make_tiny_llama(), config)
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(3))
    grads = []
    for model in (plain, checkpointed):
        model.train()
        torch.manual_seed(3)
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        assert max_rel(grads[1][name], grad) < 1e-6, name


@pytest.mark.parametrize(
    "config",
    [dict(lora_dropout=0.0), dict(lora_dropout=0.1), dict(lora_dropout=0.1, dropout_mode="lora_branch")],
    ids=["no_dropout", "paper_dropout", "branch_dropout"],
)
def test_bf16_autocast_trains_within_bf16_rounding_of_fp32(config):
    """Mixed precision as the trainers run it (fp32 weights, bf16 autocast): the matrix products run in bf16."""
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    model = get_peft_model(make_tiny_llama(), DoraConfig(r=4, lora_alpha=8, **config)).train()
    perturb_adapters(model)
    results = []
    for autocast in (False, True):
        torch.manual_seed(5)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        results.append(
            (
                out.logits.float().detach(),
                {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
            )
        )
        model.zero_grad()
    assert max_rel(results[1][0], results[0][0]) < 2e-2
    assert max(max_rel(results[1][1][n], g) for n, g in results[0][1].items()) < 5e-2
