"""Real weights: our DoRA layer on SmolLM2-135M-Instruct (``dora pull smollm2-135m``) against stock PEFT's DoRA.

Every check of ``test_peft_equivalence.py`` on a random tiny LLaMA meets here a model that has learned language: 30
layers, grouped-query attention, tied embeddings, a real tokenizer. Where the model cannot be pulled the tests skip
(CI sets ``DORA_REQUIRE_REAL_MODEL=1`` so that they fail instead).

Tolerances are PEFT's own error, never picked numbers: a float64 copy of the model running PEFT's DoRA is the
exact answer, and ours may differ from PEFT by at most twice PEFT's own distance to it (the triangle inequality,
were ours exactly as accurate as PEFT). In bf16 that distance is large (30 layers of bf16 rounding, mostly in the
base model that both share), so ours must also be as accurate as PEFT in the median over the gradients.
"""

from __future__ import annotations

import copy
import csv
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from helpers import REAL_MODEL, REPO, TARGETS, perturb_adapters, real_model_path
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from dora_plugins import DoraConfig
from dora_plugins.peft_layer import DoraLinear, route_peft

LAYERS = 30
CONFIG = dict(r=32, lora_alpha=64, target_modules=TARGETS, task_type="CAUSAL_LM")  # the paper's preset
PAPER_DROPOUT = 0.05
# B ~ N(0, 0.02): s B A is about a tenth of W0, as after training. perturb_adapters' default 0.2 makes s B A as large
# as W0 and the model chaotic (loss 6.9 instead of 3.2), where bf16 gradients are 50 times off in both layers.
B_STD = 0.02
TEXTS = [
    "The capital of France is Paris, and the capital of Germany is Berlin.",
    "Please choose the correct answer to the question: Which gas do plants take in?",
]
TOKENS = 12
FLOAT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` over all elements: an RMS error, steadier than the largest one (which one element
    decides) when two implementations' rounding errors are compared."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def adapted(model, config, seed: int = 1):
    """``get_peft_model`` with the adapters perturbed; ``lora_A`` is drawn from ``seed`` too, not from whatever the
    global random state is after the tests that ran before."""
    torch.manual_seed(seed)
    model = get_peft_model(model, config)
    perturb_adapters(model, seed=seed, std=B_STD)
    return model


def load_base(model_dir: Path, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()


def q_proj(model) -> nn.Module:
    return model.base_model.model.model.layers[0].self_attn.q_proj


def adapter_state(model) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if "lora_" in k}


def load_adapters(model, state: dict[str, torch.Tensor]) -> None:
    """``state`` into ``model`` (cast to its adapters' dtypes); every adapter tensor must be among them."""
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys and not [k for k in result.missing_keys if "lora_" in k]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return real_model_path()


@pytest.fixture(scope="module")
def input_ids(model_dir) -> torch.Tensor:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = tokenizer(TEXTS, truncation=True, max_length=TOKENS, return_tensors="pt").input_ids
    assert ids.shape == (2, TOKENS)
    return ids


@dataclass
class Step:
    """What a training step gives: logits (batch, seq, vocab) in float64, the loss and every adapter gradient."""

    logits: torch.Tensor
    loss: float
    grads: dict[str, torch.Tensor]


def set_dropout(model, p: float) -> None:
    """What PEFT builds for ``lora_dropout=p``: ``nn.Dropout(p)``, or ``nn.Identity`` for 0."""
    for module in model.modules():
        if isinstance(getattr(module, "lora_dropout", None), nn.ModuleDict):
            module.lora_dropout["default"] = nn.Dropout(p) if p else nn.Identity()


def train_step(model, ids: torch.Tensor, dropout: float, seed: int = 7, keep_grads: bool = False) -> Step:
    set_dropout(model, dropout)
    model.train()
    torch.manual_seed(seed)  # the same dropout masks in every model: they do not depend on the dtype
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    if not keep_grads:
        model.zero_grad(set_to_none=True)
    return Step(out.logits.detach().double(), out.loss.item(), grads)


@dataclass
class Errors:
    """:func:`rel_error` of ours and PEFT against the float64 reference, and of ours against PEFT."""

    logits_gap: float
    logits_ours: float
    logits_peft: float
    grad_gap: dict[str, float]
    grad_ours: dict[str, float]
    grad_peft: dict[str, float]

    def summary(self) -> str:
        worst = max(self.grad_gap, key=self.grad_gap.__getitem__)
        return (
            f"logits: ours-PEFT {self.logits_gap:.2e}, PEFT-ref {self.logits_peft:.2e}, ours-ref {self.logits_ours:.2e}"
            f"; gradients ({len(self.grad_gap)}): worst ours-PEFT {self.grad_gap[worst]:.2e} ({worst}), worst "
            f"PEFT-ref {max(self.grad_peft.values()):.2e}, worst ours-ref {max(self.grad_ours.values()):.2e}, median "
            f"PEFT-ref {statistics.median(self.grad_peft.values()):.2e}, median ours-ref "
            f"{statistics.median(self.grad_ours.values()):.2e}"
        )


def errors(ours: Step, peft: Step, ref: Step) -> Errors:
    assert ours.grads.keys() == peft.grads.keys() == ref.grads.keys()
    return Errors(
        rel_error(ours.logits, peft.logits),
        rel_error(ours.logits, ref.logits),
        rel_error(peft.logits, ref.logits),
        {k: rel_error(g, peft.grads[k]) for k, g in ours.grads.items()},
        {k: rel_error(g, ref.grads[k]) for k, g in ours.grads.items()},
        {k: rel_error(g, ref.grads[k]) for k, g in peft.grads.items()},
    )


def assert_matches_peft(found: Errors) -> None:
    """Ours equals PEFT within twice PEFT's own error, logits and every gradient, and is as accurate as PEFT."""
    assert found.logits_gap <= 2 * found.logits_peft, found.summary()
    assert found.logits_ours <= 2 * found.logits_peft, found.summary()
    bound = 2 * max(found.grad_peft.values())
    for name, gap in found.grad_gap.items():
        assert gap <= bound, f"{name}: {gap:.2e} > {bound:.2e}; {found.summary()}"
    median_ours, median_peft = (statistics.median(e.values()) for e in (found.grad_ours, found.grad_peft))
    assert median_ours <= 2 * median_peft, found.summary()


@pytest.fixture(scope="class")  # 3 GB: freed once the class's tests are done
def five_models(model_dir):
    """Ours and PEFT's DoRA in fp32 and in bf16, and PEFT's in float64 (the reference), with the same adapters.

    The base weights are rounded to bf16 once, so that all five compute with the same weights and one reference
    serves both dtypes. As in PEFT, the adapters of the bf16 models are fp32 (``autocast_adapter_dtype``).
    """
    base = load_base(model_dir)
    with torch.no_grad():
        for param in base.parameters():
            param.copy_(param.to(torch.bfloat16))
    config = dict(CONFIG, lora_dropout=PAPER_DROPOUT)
    models = {}
    for name, dtype in (("ours", "fp32"), ("peft", "fp32"), ("ours", "bf16"), ("peft", "bf16"), ("ref", "fp64")):
        adapter = DoraConfig(**config) if name == "ours" else LoraConfig(use_dora=True, **config)
        model = adapted(copy.deepcopy(base).to(FLOAT_DTYPES.get(dtype, torch.float64)), adapter)
        if not models:
            state = adapter_state(model)
        load_adapters(model, state)
        models[name, dtype] = model
    assert isinstance(q_proj(models["ours", "bf16"]), DoraLinear)
    assert not isinstance(q_proj(models["peft", "bf16"]), DoraLinear)
    return models


@pytest.fixture(scope="class")
def steps(five_models, input_ids):
    """``steps(dropout)``: each model's training step, computed once per dropout."""
    done: dict[float, dict] = {}

    def run(dropout: float) -> dict:
        if dropout not in done:
            done[dropout] = {key: train_step(model, input_ids, dropout) for key, model in five_models.items()}
        return done[dropout]

    return run


class TestOnSmolLM2:
    @pytest.mark.parametrize("dropout", [0.0, PAPER_DROPOUT], ids=["no_dropout", "paper_dropout"])
    @pytest.mark.parametrize("dtype", ["fp32", "bf16"])
    def test_logits_and_every_gradient_match_peft_dora(self, steps, dtype, dropout):
        step = steps(dropout)
        ours, peft, ref = step["ours", dtype], step["peft", dtype], step["ref", "fp64"]
        assert len(ours.grads) == LAYERS * len(TARGETS) * 3  # lora_A, lora_B, magnitude of every adapted layer
        found = errors(ours, peft, ref)
        print(f"\n{dtype} dropout {dropout}: {found.summary()}")
        assert_matches_peft(found)
        assert 1 < ref.loss < 6  # a model that has learned language, adapters and all


@pytest.fixture(scope="module")
def dora_adapter(model_dir, tmp_path_factory) -> Path:
    """A saved DoRA adapter of ours on SmolLM2 (paper's preset, perturbed): a PEFT adapter folder."""
    model = adapted(load_base(model_dir), DoraConfig(**CONFIG, lora_dropout=PAPER_DROPOUT), seed=2)
    path = tmp_path_factory.mktemp("adapters") / "dora"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def eval_logits(model_dir, dora_adapter, input_ids) -> dict[str, torch.Tensor]:
    """Eval logits of the saved adapter: ours, stock PEFT (routing off) in fp32 and float64, merged and not."""
    route_peft(True)
    ours = PeftModel.from_pretrained(load_base(model_dir), dora_adapter)
    route_peft(False)
    stock = PeftModel.from_pretrained(load_base(model_dir), dora_adapter)
    ref = PeftModel.from_pretrained(load_base(model_dir, torch.float64), dora_adapter)
    assert isinstance(q_proj(ours), DoraLinear) and not isinstance(q_proj(stock), DoraLinear)
    logits = {}
    with torch.no_grad():
        for name, model in (("ours", ours), ("stock", stock), ("ref", ref)):
            logits[name] = model.eval()(input_ids=input_ids).logits.double()
        for name, model in (("ours", ours), ("stock", stock)):
            model.merge_adapter()
            logits[f"{name} merged"] = model(input_ids=input_ids).logits.double()
            model.unmerge_adapter()
            logits[f"{name} unmerged again"] = model(input_ids=input_ids).logits.double()
    return logits


def test_saved_adapter_loads_in_stock_peft_with_the_same_logits(eval_logits):
    gap = rel_error(eval_logits["ours"], eval_logits["stock"])
    peft_error = rel_error(eval_logits["stock"], eval_logits["ref"])
    print(f"\nsaved -> stock PEFT load: ours-PEFT {gap:.2e}, PEFT-ref {peft_error:.2e}")
    assert gap <= 2 * peft_error


def test_merged_equals_unmerged_within_peft_own_merge_error(eval_logits):
    ref = eval_logits["ref"]
    peft_gap = rel_error(eval_logits["stock merged"], eval_logits["stock"])
    peft_error = rel_error(eval_logits["stock merged"], ref)
    merged_gap = rel_error(eval_logits["ours merged"], eval_logits["ours"])
    print(f"\nmerge: ours merged-unmerged {merged_gap:.2e}, PEFT merged-unmerged {peft_gap:.2e}, PEFT merged-ref "
          f"{peft_error:.2e}, ours merged-ref {rel_error(eval_logits['ours merged'], ref):.2e}")  # fmt: skip
    assert merged_gap <= 2 * peft_gap
    assert rel_error(eval_logits["ours merged"], ref) <= 2 * peft_error
    assert rel_error(eval_logits["ours unmerged again"], eval_logits["ours"]) <= 2 * peft_gap


@pytest.mark.slow
def test_dora_merge_cli_on_the_named_real_model(dora_adapter, eval_logits, input_ids, tmp_path):
    from dora_plugins.cli import main as dora_main

    output = tmp_path / "merged"
    assert dora_main(["merge", "--base", REAL_MODEL, "--adapter", str(dora_adapter), "--output", str(output)]) == 0
    merged = load_base(output)
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    with torch.no_grad():
        logits = merged(input_ids=input_ids).logits.double()
    peft_error = rel_error(eval_logits["stock merged"], eval_logits["ref"])
    assert rel_error(logits, eval_logits["ref"]) <= 2 * peft_error


# ---- dora analyze on real checkpoints ----


def dense_reference(model_dir: Path, checkpoint: Path) -> dict[str, tuple[float, float]]:
    """Eq. 5 and 6 of the paper on the whole W' (DoRA: m V / ||V||; LoRA: V = W0 + s B A), in float64."""
    from safetensors.torch import load_file

    config = json.loads((checkpoint / "adapter_config.json").read_text())
    scaling = config["lora_alpha"] / config["r"]
    base = load_file(model_dir / "model.safetensors")
    saved = load_file(checkpoint / "adapter_model.safetensors")
    reference = {}
    for key in saved:
        if not key.endswith("lora_A.weight"):
            continue
        module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
        prefix = key.removesuffix("lora_A.weight")
        w0 = base[f"{module}.weight"].double()  # (out, in)
        v = w0 + scaling * saved[f"{prefix}lora_B.weight"].double() @ saved[key].double()
        w = v
        if f"{prefix}lora_magnitude_vector" in saved:
            w = saved[f"{prefix}lora_magnitude_vector"].double()[:, None] * v / v.norm(dim=1, keepdim=True)
        delta_m = (w.norm(dim=1) - w0.norm(dim=1)).abs().mean().item()
        delta_d = (1 - torch.nn.functional.cosine_similarity(w, w0, dim=1)).mean().item()
        reference[module] = (delta_m, delta_d)
    return reference


@pytest.fixture(scope="module")
def two_runs(model_dir, dora_adapter, tmp_path_factory) -> Path:
    """runs/lora/checkpoint-1 (a perturbed LoRA adapter) and runs/dora/checkpoint-1 (the saved DoRA adapter)."""
    import shutil

    runs = tmp_path_factory.mktemp("runs")
    lora = adapted(load_base(model_dir), LoraConfig(**CONFIG), seed=3)
    lora.save_pretrained(runs / "lora" / "checkpoint-1")
    shutil.copytree(dora_adapter, runs / "dora" / "checkpoint-1")
    return runs


def test_dora_analyze_on_the_named_real_model_equals_the_dense_float64_reference(model_dir, two_runs, tmp_path):
    from dora_plugins.cli import main as dora_main

    checkpoints = sorted(two_runs.glob("*/checkpoint-1"))
    output = tmp_path / "analysis"
    assert dora_main(["analyze", "--base", REAL_MODEL, *map(str, checkpoints), "--output", str(output)]) == 0
    with open(output / "dynamics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2 * LAYERS * len(TARGETS)
    references = {run: dense_reference(model_dir, two_runs / run / "checkpoint-1") for run in ("lora", "dora")}
    worst = 0.0
    for row in rows:
        delta_m, delta_d = references[row["run"]][row["module"]]
        assert row["method"] == {"lora": "LoRA", "dora": "DoRA"}[row["run"]]
        assert delta_m > 0 and delta_d > 0
        errors = (abs(float(row["delta_m"]) - delta_m) / delta_m, abs(float(row["delta_d"]) - delta_d) / delta_d)
        worst = max(worst, *errors)
    print(f"\ndora analyze vs dense float64: worst relative error {worst:.2e} over {len(rows)} rows")
    assert worst < 1e-5  # float32 arithmetic on rows of 576 or 1536 values: about sqrt(n) * 6e-8


# ---- lm-eval's HF model with peft= on a SmolLM2 DoRA adapter ----


def lm_eval_generations(model_dir: Path, adapter: Path, routed: bool) -> tuple[list[str], nn.Module]:
    """``lm_eval --model hf --model_args pretrained=...,peft=...`` (its HFLM code path) on 2 dora_piqa items."""
    import logging

    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from lm_eval_tasks import discovery

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    route_peft(routed)
    lm = HFLM(pretrained=str(model_dir), peft=str(adapter), dtype="float32", device="cpu", batch_size=1)
    data_dir = REPO / "dora_plugins" / "demo_data" / "eval"
    manager = TaskManager(include_defaults=False, include_path=discovery.TASK_DIR, metadata={"data_dir": str(data_dir)})
    results = lm_eval.simple_evaluate(
        model=lm, tasks=["dora_piqa"], task_manager=manager, limit=2, gen_kwargs="max_gen_toks=8", log_samples=True
    )
    samples = [s for s in results["samples"]["dora_piqa"] if s["filter"] == "improved"]
    assert [s["arguments"][0][1]["num_beams"] for s in samples] == [4] * 2  # the paper's beams
    return [s["resps"][0][0] for s in samples], q_proj(lm.model)


@pytest.mark.slow
def test_lm_eval_peft_generates_what_stock_peft_generates_on_smollm2(model_dir, dora_adapter):
    routed, routed_layer = lm_eval_generations(model_dir, dora_adapter, routed=True)
    stock, stock_layer = lm_eval_generations(model_dir, dora_adapter, routed=False)
    assert isinstance(routed_layer, DoraLinear) and not isinstance(stock_layer, DoraLinear)
    print(f"\nlm-eval generations: {routed}")
    assert all(text.strip() for text in stock)
    assert routed == stock


# ---- QDoRA: a bitsandbytes 4-bit SmolLM2 on the CPU ----


@pytest.mark.slow
def test_4bit_smollm2_trains_and_matches_peft_qdora_at_every_step(model_dir, input_ids):
    """Ours trains the 4-bit model; at each step stock PEFT's QDoRA, given the same adapters, computes the same.

    The reference, at each step, is PEFT's DoRA in float64 on the dequantized 4-bit weights, which both layers
    compute with. Training mode only: no eval forward, so bitsandbytes never repacks the weights for its CPU
    inference kernel (see the report of issue 26 on that).
    """
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (pip install dora-plugins[kbit])")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from dora_plugins.peft_layer import DoraVariant, base_weight

    quantization = BitsAndBytesConfig(load_in_4bit=True)
    quantized = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quantization)
    stock_base, ref_base = copy.deepcopy(quantized), load_base(model_dir, torch.float64)
    with torch.no_grad():
        for name, module in quantized.named_modules():
            if type(module).__name__ == "Linear4bit":
                ref_base.get_submodule(name).weight.copy_(base_weight(module))
    config = dict(CONFIG, lora_dropout=PAPER_DROPOUT)
    ours = adapted(quantized, DoraConfig(**config))
    stock = get_peft_model(stock_base, LoraConfig(use_dora=True, **config))
    ref = get_peft_model(ref_base, LoraConfig(use_dora=True, **config))
    for model in (stock, ref):
        load_adapters(model, adapter_state(ours))
    assert type(q_proj(ours).get_base_layer()).__name__ == "Linear4bit"
    assert isinstance(q_proj(ours).lora_variant["default"], DoraVariant)
    assert not isinstance(q_proj(stock).lora_variant["default"], DoraVariant)

    optimizer = torch.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for seed in range(3):
        for model in (stock, ref):
            load_adapters(model, adapter_state(ours))
        step = train_step(ours, input_ids, PAPER_DROPOUT, seed=seed, keep_grads=True)
        found = errors(step, *(train_step(m, input_ids, PAPER_DROPOUT, seed=seed) for m in (stock, ref)))
        print(f"\n4-bit, step {seed + 1}: loss {step.loss:.4f}; {found.summary()}")
        assert_matches_peft(found)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(step.loss)
    assert losses[-1] < losses[0]
