"""DoraConfig: paper defaults, bad input, and the import boundary of the core."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import make_tiny_llama
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
        ({"r": 0}, "r must be a positive integer, got 0"),
        ({"r": -4}, "r must be a positive integer, got -4"),
        ({"r": float("inf")}, "r must be a positive integer, got inf"),
        ({"lora_alpha": 0}, "lora_alpha must be a positive finite number"),
        ({"lora_alpha": -1.5}, "lora_alpha must be a positive finite number"),
        ({"lora_alpha": float("nan")}, "lora_alpha must be a positive finite number, got nan"),
        ({"lora_alpha": float("inf")}, "lora_alpha must be a positive finite number, got inf"),
        ({"lora_dropout": 1.0}, r"lora_dropout must be a number in \[0, 1\)"),
        ({"lora_dropout": float("nan")}, r"lora_dropout must be a number in \[0, 1\), got nan"),
        ({"dropout_mode": "lora"}, "dropout_mode must be one of paper, lora_branch; got 'lora'"),
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


def test_round_trip_keeps_the_dropout_mode_and_writes_defaults_not_at_all(tmp_path):
    import json

    DoraConfig(dropout_mode="lora_branch").save_pretrained(tmp_path / "branch")
    assert DoraConfig.from_pretrained(tmp_path / "branch").dropout_mode == "lora_branch"
    DoraConfig().save_pretrained(tmp_path / "paper")
    saved = json.loads((tmp_path / "paper" / "adapter_config.json").read_text())
    assert "dropout_mode" not in saved and "detach_norm" not in saved  # stock PEFT would warn about them


def test_keys_missing_from_a_saved_config_take_stock_peft_defaults_not_the_papers(tmp_path):
    """A file means what stock PEFT reads in it: without lora_alpha, the scaling is LoraConfig's 8 / r."""
    import json

    LoraConfig(r=32, use_dora=True, target_modules=["q_proj"]).save_pretrained(tmp_path)
    path = tmp_path / "adapter_config.json"
    saved = json.loads(path.read_text())
    for key in ("lora_alpha", "lora_dropout", "task_type"):
        saved.pop(key)
    path.write_text(json.dumps(saved))
    ours, stock = DoraConfig.from_pretrained(tmp_path), LoraConfig.from_pretrained(tmp_path)
    assert (ours.r, ours.lora_alpha, ours.lora_dropout, ours.task_type) == (32, stock.lora_alpha, 0.0, None)


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
