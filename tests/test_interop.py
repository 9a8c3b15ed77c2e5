"""Adapters move both ways between dora-plugins and stock PEFT; `dora merge` writes a plain model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import TARGETS, make_tiny_llama, max_rel, perturb_adapters
from peft import LoraConfig, get_peft_model

from dora_plugins import DoraConfig, load_adapter
from dora_plugins.cli import main as dora_main
from dora_plugins.peft_layer import DoraVariant

IDS = torch.arange(24).reshape(2, 12) % 128


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=IDS).logits


@pytest.fixture
def saved(tmp_path):
    """A base model directory and a trained-looking DoRA adapter saved by our DoraConfig."""
    base = make_tiny_llama()
    base.save_pretrained(tmp_path / "base")
    model = get_peft_model(base, DoraConfig(r=4, lora_alpha=8))
    perturb_adapters(model)
    model.save_pretrained(tmp_path / "adapter")
    return tmp_path, logits(model)


def test_saved_config_is_plain_peft_dora(saved):
    tmp_path, _ = saved
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["use_dora"] is True
    assert "detach_norm" not in config  # stock PEFT would warn about an unknown key
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert not list((tmp_path / "adapter").glob("*.bin"))


def test_stock_peft_loads_our_adapter_without_dora_plugins(saved):
    tmp_path, expected = saved
    torch.save(expected, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({str(tmp_path / "base")!r}),
                                          {str(tmp_path / "adapter")!r}).eval()
        with torch.no_grad():
            out = model(input_ids=torch.arange(24).reshape(2, 12) % 128).logits
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        assert "dora_plugins.peft_layer" not in sys.modules, "our layer was imported"
        print(((out - expected).abs().max() / expected.abs().max()).item())
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.strip().splitlines()[-1]) < 1e-5


def test_stock_peft_dora_adapter_loads_into_our_layer(tmp_path):
    base = make_tiny_llama()
    stock = get_peft_model(
        make_tiny_llama(), LoraConfig(r=4, lora_alpha=8, use_dora=True, target_modules=TARGETS, task_type="CAUSAL_LM")
    )
    perturb_adapters(stock)
    stock.save_pretrained(tmp_path / "stock")
    ours = load_adapter(base, tmp_path / "stock")
    q_proj = ours.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.lora_variant["default"], DoraVariant)
    assert max_rel(logits(ours), logits(stock)) < 1e-5


def test_merge_and_unload_matches_unmerged_logits(saved):
    tmp_path, expected = saved
    model = load_adapter(make_tiny_llama(), tmp_path / "adapter")
    assert max_rel(logits(model), expected) < 1e-5
    merged = model.merge_and_unload()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert max_rel(logits(merged), expected) < 1e-5


def test_dora_merge_cli_writes_a_plain_transformers_model(saved, tmp_path):
    from transformers import AutoModelForCausalLM

    root, expected = saved
    out = tmp_path / "merged"
    assert (
        dora_main(["merge", "--base", str(root / "base"), "--adapter", str(root / "adapter"), "--output", str(out)])
        == 0
    )
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # an ordinary folder, not mkdtemp's private one
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert max_rel(logits(merged), expected) < 1e-5


def test_failed_merge_leaves_previous_output_intact(saved, tmp_path, capsys):
    root, _ = saved
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("previous checkpoint")
    (root / "adapter" / "adapter_model.safetensors").write_bytes(b"\x00garbage")
    argv = ["merge", "--base", str(root / "base"), "--adapter", str(root / "adapter"), "--output", str(out)]
    assert dora_main([*argv, "--overwrite"]) == 2
    assert "corrupt or not safetensors" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "previous checkpoint"


def test_missing_adapter_directory_and_files_are_named(tmp_path):
    model = make_tiny_llama()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_adapter(model, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No adapter_config.json"):
        load_adapter(model, tmp_path / "empty")


def test_corrupt_config_and_pickle_only_adapters_are_refused(saved):
    tmp_path, _ = saved
    adapter = tmp_path / "adapter"
    weights = adapter / "adapter_model.safetensors"
    weights.rename(adapter / "adapter_model.bin")
    with pytest.raises(FileNotFoundError, match="pickle checkpoint"):
        load_adapter(make_tiny_llama(), adapter)
    (adapter / "adapter_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="adapter_config.json is not valid JSON"):
        load_adapter(make_tiny_llama(), adapter)


def test_adapter_for_another_shape_is_refused_clearly(saved):

    tmp_path, _ = saved
    wider = make_tiny_llama(hidden_size=96)
    with pytest.raises(ValueError, match="does not fit this model"):
        load_adapter(wider, tmp_path / "adapter")
