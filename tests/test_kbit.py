"""QDoRA: our layer on bitsandbytes 4-bit and 8-bit bases, against stock PEFT's DoRA on the same quantized model.

bitsandbytes runs on the CPU: 4-bit trains and generates; 8-bit runs inference only (its backward needs CUDA).
Both models see the same dequantized weights, so the tolerance is float rounding, not quantization error.
"""

from __future__ import annotations

import pytest
import torch
from helpers import TARGETS, make_tiny_llama, max_rel, no_cpu_repacking, perturb_adapters, word_tokenizer
from peft import LoraConfig, get_peft_model

from dora_plugins import DoraConfig
from dora_plugins.peft_layer import DoraVariant

pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (pip install dora-plugins[kbit])")

CONFIG = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
IDS = torch.arange(3, 27).reshape(2, 12)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    make_tiny_llama().save_pretrained(path)
    word_tokenizer().save_pretrained(path)
    return path


def quantized(base_dir, bits: int, **kwargs):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(**{f"load_in_{bits}bit": True, **kwargs})
    return AutoModelForCausalLM.from_pretrained(base_dir, quantization_config=quantization)


def pair(base_dir, bits: int, **config):
    ours = get_peft_model(quantized(base_dir, bits), DoraConfig(**{**CONFIG, **config}))
    perturb_adapters(ours)
    stock = get_peft_model(quantized(base_dir, bits), LoraConfig(use_dora=True, **{**CONFIG, **config}))
    stock.load_state_dict({k: v for k, v in ours.state_dict().items() if "lora_" in k}, strict=False)
    return ours, stock


def q_proj(model):
    return model.base_model.model.model.layers[0].self_attn.q_proj


@pytest.mark.parametrize("dropout", [0.0, 0.05], ids=["no_dropout", "paper_dropout"])
def test_4bit_training_matches_stock_peft_dora(base_dir, dropout):
    ours, stock = pair(base_dir, 4, lora_dropout=dropout)
    assert isinstance(q_proj(ours).lora_variant["default"], DoraVariant)
    assert type(q_proj(ours).get_base_layer()).__name__ == "Linear4bit"
    results = []
    for model in (ours, stock):
        model.train()
        torch.manual_seed(7)
        out = model(input_ids=IDS, labels=IDS)
        out.loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        results.append((out.logits.detach(), grads))
    assert max_rel(results[0][0], results[1][0]) < 1e-5
    assert results[0][1].keys() == results[1][1].keys()
    for name, grad in results[0][1].items():
        assert max_rel(grad, results[1][1][name]) < 1e-4, name


def test_4bit_generation_and_merge_match_stock_peft_dora(base_dir):
    """Stock PEFT reads a repacked 4-bit weight scrambled, so both models keep bitsandbytes' portable layout."""
    ours, stock = (no_cpu_repacking(m) for m in pair(base_dir, 4))
    ids = IDS[:1, :6]
    generated = [m.eval().generate(input_ids=ids, max_new_tokens=8, do_sample=False) for m in (ours, stock)]
    assert torch.equal(generated[0], generated[1])
    with torch.no_grad():
        unmerged = [m(input_ids=IDS).logits for m in (ours, stock)]
        ours.merge_adapter(), stock.merge_adapter()
        merged = [m(input_ids=IDS).logits for m in (ours, stock)]
    assert max_rel(unmerged[0], unmerged[1]) < 1e-5 and max_rel(merged[0], merged[1]) < 1e-5
    # Merging re-quantizes W' to 4 bits: the gap to the unmerged model is PEFT's own on this case, no more.
    assert max_rel(merged[0], unmerged[0]) <= max_rel(merged[1], unmerged[1]) + 1e-5


def lora_layers(model) -> list:
    return [m for m in model.modules() if hasattr(m, "lora_magnitude_vector")]


def dequantized(layer) -> torch.Tensor:
    from bitsandbytes.functional import dequantize_4bit

    weight = layer.get_base_layer().weight
    assert not getattr(weight.quant_state, "packing_format_for_cpu", False)
    return dequantize_4bit(weight.data, weight.quant_state)


def test_4bit_merge_requantizes_the_exact_merged_weight_after_eval_forwards(base_dir):
    """bitsandbytes >= 0.49 on a CPU with AVX512-BF16 repacks a 4-bit weight at its first eval forward, and
    ``dequantize_4bit`` (PEFT's DoRA and 4-bit merge) then reads it scrambled: merged and unmerged logits were
    0.49-0.69 apart. Our layers are never repacked, so each merged weight is the 4-bit rounding of the exact
    ``W' = m (W + s B A) / ||W + s B A||``, as bitsandbytes quantizes it (on any CPU)."""
    from bitsandbytes.functional import dequantize_4bit, quantize_4bit

    ours = pair(base_dir, 4)[0].eval()
    with torch.no_grad():
        ours.generate(input_ids=IDS[:1, :6], max_new_tokens=4, do_sample=False)  # eval forwards: would repack
        layers = lora_layers(ours)
        exact = []
        for layer in layers:
            w = dequantized(layer).double()  # (out, in)
            a, b = (f["default"].weight.double() for f in (layer.lora_A, layer.lora_B))
            combined = w + layer.scaling["default"] * b @ a
            m = layer.lora_magnitude_vector["default"].weight.double()
            exact.append((m / combined.norm(dim=1)).unsqueeze(1) * combined)
        ours.merge_adapter()
        for layer, expected in zip(layers, exact, strict=True):
            state = layer.get_base_layer().weight.quant_state
            rounded = dequantize_4bit(
                *quantize_4bit(expected.float(), blocksize=state.blocksize, quant_type=state.quant_type)
            )
            assert max_rel(dequantized(layer), rounded) < 1e-6


@pytest.mark.skipif(
    not __import__("bitsandbytes").functional.has_avx512bf16(),
    reason="bitsandbytes repacks 4-bit weights only on CPUs with AVX512-BF16",
)
def test_a_4bit_base_repacked_before_wrapping_is_read_right(base_dir):
    """A model run in eval mode before ``get_peft_model`` has repacked weights: wrapping restores the portable
    layout, whose block scales keep the bf16 rounding of the repacking (8 significant bits: relative 2**-8)."""
    repacked = quantized(base_dir, 4).eval()
    with torch.no_grad():
        repacked(input_ids=IDS)
    assert repacked.model.layers[0].self_attn.q_proj.weight.quant_state.packing_format_for_cpu
    ours = get_peft_model(repacked, DoraConfig(**CONFIG))
    perturb_adapters(ours)
    fresh = get_peft_model(quantized(base_dir, 4), DoraConfig(**CONFIG))
    fresh.load_state_dict({k: v for k, v in ours.state_dict().items() if "lora_" in k}, strict=False)
    for mine, theirs in zip(lora_layers(ours), lora_layers(fresh), strict=True):
        mine, theirs = mine.get_base_layer().weight, theirs.get_base_layer().weight
        assert torch.equal(mine.data, theirs.data)  # the 4-bit codes, back in place
        assert max_rel(mine.quant_state.absmax, theirs.quant_state.absmax) <= 2**-8
        theirs.quant_state.absmax = mine.quant_state.absmax.clone()
    with torch.no_grad():
        assert max_rel(ours.eval()(input_ids=IDS).logits, fresh.eval()(input_ids=IDS).logits) < 1e-5


def test_8bit_inference_matches_stock_peft_dora_and_keeps_working(base_dir):
    """Stock PEFT's DoRA breaks an 8-bit layer on the CPU after its first forward (its dequantization helper
    resets the layer's state); ours dequantizes without touching the layer."""
    ours, stock = pair(base_dir, 8)
    with torch.no_grad():
        first = stock.eval()(input_ids=IDS).logits
        for _ in range(3):
            assert max_rel(ours.eval()(input_ids=IDS).logits, first) < 1e-5


def test_magnitude_stays_fp32_and_learns_through_trl_on_a_4bit_model(base_dir, tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model = quantized(base_dir, 4, bnb_4bit_compute_dtype=torch.bfloat16)
    rows = [{"input_ids": list(range(3, 3 + n)), "labels": list(range(3, 3 + n))} for n in (10, 12, 14, 16)]
    args = SFTConfig(
        output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=2, learning_rate=1e-2,
        report_to="none", save_strategy="no", bf16=False, use_cpu=True, dataloader_pin_memory=False,
    )  # fmt: skip
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=word_tokenizer(),
        peft_config=DoraConfig(**CONFIG),
    )
    magnitude = q_proj(trainer.model).lora_magnitude_vector["default"].weight
    before = magnitude.detach().clone()
    trainer.train()
    assert magnitude.dtype == torch.float32
    assert not torch.equal(magnitude.detach(), before)


@pytest.mark.slow
def test_dora_sft_load_in_4bit_trains_on_the_cpu_and_saves_a_peft_adapter(base_dir, tmp_path, capsys):
    import json

    from safetensors.torch import load_file

    from dora_plugins.cli import main as dora_main

    words = " ".join(f"t{i}" for i in range(5, 40))
    (tmp_path / "data.json").write_text(json.dumps([{"instruction": words, "output": "t7 t8"}] * 8))
    args = ["sft", "--model_name_or_path", str(base_dir), "--dataset_name", str(tmp_path / "data.json"),
            "--output_dir", str(tmp_path / "run"), "--load_in_4bit", "--max_steps", "2",
            "--per_device_train_batch_size", "4", "--report_to", "none", "--save_strategy", "no"]  # fmt: skip
    assert dora_main(args) == 0
    setup = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("setup:"))
    # After TRL's k-bit preparation, as trained: TRL casts LoRA A and B to bf16 (QLoRA's choice) and exempts the
    # magnitude (bf16 would swallow its small updates). docs/training.md states it.
    assert "lora_A bfloat16, lora_B bfloat16, magnitude float32;" in setup
    args[args.index("--output_dir") + 1] = str(tmp_path / "plan")
    assert dora_main([*args, "--dry_run"]) == 0  # the plan states the dtypes the run got
    plan = capsys.readouterr().out
    assert "dtypes: base weights 4-bit (bitsandbytes), adapters bfloat16 (TRL's k-bit cast), magnitude float32" in plan
    saved = load_file(tmp_path / "run" / "adapter_model.safetensors")
    magnitudes = [v for k, v in saved.items() if "lora_magnitude_vector" in k]
    assert len(magnitudes) == 2 * len(TARGETS) and all(m.dtype == torch.float32 for m in magnitudes)
