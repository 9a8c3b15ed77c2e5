"""The PEFT config of a run: presets, TRL's --lora_* overrides, target modules checked before training."""

from __future__ import annotations

import pytest
from peft import LoraConfig
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel
from trl import ModelConfig

from dora_plugins import DoraConfig
from trl_integration.peft_config import build_peft_config, check_target_modules

PAPER_TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]


def _unset_model_args(**values) -> ModelConfig:
    """ModelConfig as 'dora sft' parses it: rank, alpha, dropout unset unless given."""
    return ModelConfig(**{"lora_r": None, "lora_alpha": None, "lora_dropout": None, **values})


def test_presets_give_the_paper_configs():
    dora = build_peft_config("dora", _unset_model_args())
    half = build_peft_config("dora_half", _unset_model_args())
    lora = build_peft_config("lora", _unset_model_args())
    assert isinstance(dora, DoraConfig) and (dora.r, dora.lora_alpha, dora.lora_dropout) == (32, 64, 0.05)
    assert isinstance(half, DoraConfig) and (half.r, half.lora_alpha) == (16, 32)
    assert type(lora) is LoraConfig and not lora.use_dora and (lora.r, lora.lora_alpha) == (32, 64)
    assert all(sorted(c.target_modules) == sorted(PAPER_TARGETS) for c in (dora, half, lora))


def test_trl_lora_flags_override_the_preset():
    args = _unset_model_args(lora_r=8, lora_alpha=16, lora_dropout=0.0, lora_target_modules=["q_proj"], use_rslora=True)
    args.__post_init__()  # TRL turns the one-item list into the string "q_proj"
    config = build_peft_config("dora", args, detach_norm=False)
    assert isinstance(config, DoraConfig)
    assert (config.r, config.lora_alpha, config.lora_dropout, config.use_rslora) == (8, 16, 0.0, True)
    assert config.target_modules == {"q_proj"} and config.detach_norm is False


def test_unknown_preset_names_the_close_one():
    with pytest.raises(ValueError, match="Unknown preset 'dorra'. Did you mean 'dora'?"):
        build_peft_config("dorra", _unset_model_args())


def test_detach_norm_false_needs_a_dora_preset():
    with pytest.raises(ValueError, match="detach_norm=False needs a DoRA preset"):
        build_peft_config("lora", _unset_model_args(), detach_norm=False)


def test_unknown_target_module_is_named_with_a_suggestion(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = build_peft_config("dora", _unset_model_args(lora_target_modules=["q_projj", "v_proj"]))
    with pytest.raises(ValueError, match=r"\['q_projj'\] not found in LlamaForCausalLM. Did you mean 'q_proj'"):
        check_target_modules(model, config)
    check_target_modules(model, build_peft_config("dora", _unset_model_args()))  # the paper's targets exist


def test_model_without_the_paper_targets_lists_its_linear_layers():
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32))
    with pytest.raises(ValueError, match=r"not found in GPT2LMHeadModel.*Its linear layers are: c_attn, c_fc, c_proj"):
        check_target_modules(model, build_peft_config("dora", _unset_model_args()))


def test_use_dora_with_the_lora_preset_is_an_error():
    with pytest.raises(ValueError, match="--use_dora was given but preset 'lora' is not DoRA"):
        build_peft_config("lora", _unset_model_args(use_dora=True))


def test_magnitude_only_modules_reach_the_config_and_a_yaml_scalar_is_a_name():
    config = build_peft_config("dora_qkv", _unset_model_args(), magnitude_only_modules="o_proj")
    assert isinstance(config, DoraConfig) and config.magnitude_only_modules == ["o_proj"]
    assert set(config.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    args = _unset_model_args(lora_target_modules=["q_proj", "v_proj"])
    config = build_peft_config("dora", args, magnitude_only_modules=["o_proj", "down_proj"])
    assert set(config.target_modules) == {"q_proj", "v_proj", "o_proj", "down_proj"}


def test_magnitude_only_modules_need_a_dora_preset_and_no_overlap():
    with pytest.raises(ValueError, match="magnitude_only_modules needs a DoRA preset; preset 'lora' is plain LoRA"):
        build_peft_config("lora", _unset_model_args(), magnitude_only_modules=["o_proj"])
    args = _unset_model_args(lora_target_modules=["q_proj", "up_proj"])
    with pytest.raises(
        ValueError, match=r"\['up_proj'\] is in both target_modules \(DoRA\) and magnitude_only_modules"
    ):
        build_peft_config("dora_qkv", args)


def test_magnitude_only_names_that_match_nothing_are_named_before_training(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    check_target_modules(model, build_peft_config("dora_qkv", _unset_model_args()))
    config = build_peft_config(
        "dora", _unset_model_args(lora_target_modules=["q_proj"]), magnitude_only_modules=["o_prj"]
    )
    with pytest.raises(ValueError, match=r"magnitude_only_modules \['o_prj'\] not found.*Did you mean 'o_proj'"):
        check_target_modules(model, config)
    config = DoraConfig(target_modules=["q_proj"], magnitude_only_modules=r".*\.out_proj")
    with pytest.raises(ValueError, match=r"magnitude_only_modules '.*out_proj' \(a regex\) matches no module"):
        check_target_modules(model, config)
