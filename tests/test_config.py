"""DoraConfig: paper defaults, bad input, and the import boundary of the core."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import make_tiny_llama
from peft import LoraConfig, get_peft_model

from dora_plugins import DoraConfig


def test_paper_defaults():
    config = DoraConfig()
    assert isinstance(config, LoraConfig)
    assert (config.r, config.lora_alpha, config.lora_dropout) == (32, 64, 0.05)
    assert config.use_dora and config.detach_norm and config.task_type == "CAUSAL_LM"
    assert set(config.target_modules) == {"q_proj", "k_proj", "v_proj", "up_proj", "down_proj"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"r": 0}, "r must be a positive number, got 0"),
        ({"r": -4}, "r must be a positive number, got -4"),
        ({"lora_alpha": 0}, "lora_alpha must be a positive number"),
        ({"lora_alpha": -1.5}, "lora_alpha must be a positive number"),
        ({"lora_dropout": 1.0}, r"lora_dropout must be in \[0, 1\)"),
        ({"use_dora": False}, "DoraConfig requires use_dora=True"),
    ],
)
def test_bad_hyper_parameters_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DoraConfig(**kwargs)


def test_target_modules_that_match_nothing_are_named():
    with pytest.raises(ValueError, match="qproj"):
        get_peft_model(make_tiny_llama(), DoraConfig(target_modules=["qproj"]))


def test_round_trip_keeps_detach_norm(tmp_path):
    DoraConfig(r=8, detach_norm=False).save_pretrained(tmp_path)
    loaded = DoraConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, DoraConfig)
    assert (loaded.r, loaded.detach_norm) == (8, False)


def test_non_dora_config_is_not_read_as_dora(tmp_path):
    LoraConfig(r=8).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="Not a DoRA adapter config"):
        DoraConfig.from_pretrained(tmp_path)


def test_core_import_pulls_in_neither_trl_nor_lm_eval():
    code = (
        "import sys, dora_plugins\n"
        "from dora_plugins import DoraConfig, adapter_config, get_plugin_manager\n"
        "from dora_plugins import extract, benchmarks, prompts, plugins\n"
        "adapter_config('dora'); plugins.get_benchmarks(); plugins.get_answer_extractors()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('trl', 'lm_eval', 'trl_integration'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
