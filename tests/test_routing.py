"""Routing: stock ``LoraConfig(use_dora=True)`` runs our layer where it should, and PEFT's where it must.

``route_peft()`` switches it on in a process; the start-up hook (``dora_plugins.startup``) switches it on in the
``trl`` command line and in lm-eval's Hugging Face model by default, everywhere with ``DORA_PLUGINS_ROUTE=1``
and nowhere with ``DORA_PLUGINS_ROUTE=0``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import make_tiny_llama, max_rel, word_tokenizer
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from dora_plugins import route_peft
from dora_plugins.peft_layer import DoraLinear
from dora_plugins.startup import RouteFinder

TARGETS = ["q_proj", "v_proj"]


@pytest.fixture
def routing():
    yield route_peft
    route_peft(False)


def test_route_peft_sends_later_dora_configs_to_our_layer_and_nothing_else(routing):
    stock = LoraConfig(use_dora=True, target_modules=TARGETS)
    routing(True)
    routed = get_peft_model(make_tiny_llama(), LoraConfig(use_dora=True, target_modules=TARGETS))
    assert isinstance(routed.base_model.model.model.layers[0].self_attn.q_proj, DoraLinear)
    lora = get_peft_model(make_tiny_llama(), LoraConfig(target_modules=TARGETS))
    assert type(lora.base_model.model.model.layers[0].self_attn.q_proj) is not DoraLinear
    embedding = nn.Sequential(nn.Embedding(10, 4))  # a layer type ours does not take keeps PEFT's DoRA
    wrapped = get_peft_model(embedding, LoraConfig(use_dora=True, target_modules=["0"]))
    assert type(wrapped.base_model.model[0]).__name__ == "Embedding"
    before = get_peft_model(make_tiny_llama(), stock)  # created before routing: stays stock
    assert not isinstance(before.base_model.model.model.layers[0].self_attn.q_proj, DoraLinear)
    routing(False)
    after = get_peft_model(make_tiny_llama(), LoraConfig(use_dora=True, target_modules=TARGETS))
    assert not isinstance(after.base_model.model.model.layers[0].self_attn.q_proj, DoraLinear)


PROBE = """
import sys
{install}
print("hook armed:", any(type(f).__name__ == "RouteFinder" for f in sys.meta_path))
{imports}
from peft import LoraConfig
print("routed:", bool(LoraConfig(use_dora=True, target_modules=["q_proj"])._custom_modules))
"""


def probe(env_value: str | None, imports: str, install: bool = True) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "DORA_PLUGINS_ROUTE"}
    if env_value is not None:
        env["DORA_PLUGINS_ROUTE"] = env_value
    code = PROBE.format(install="import dora_plugins.startup as s; s.install()" if install else "", imports=imports)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines()


@pytest.mark.parametrize(
    ("setting", "imports", "routed"),
    [
        (None, "", False),  # a plain process: stock PEFT
        (None, "import trl.cli", True),  # the trl command line
        (None, "import lm_eval.models.huggingface", True),  # lm-eval's hf model, which loads peft= adapters
        ("1", "", True),  # every process
        ("0", "import trl.cli", False),  # every automatic routing off
        ("0", "import lm_eval.models.huggingface", False),
    ],
)
def test_start_up_hook_routes_by_process_and_setting(setting, imports, routed):
    assert probe(setting, imports)[-1] == f"routed: {routed}"


def test_the_installed_hook_is_armed_at_start_without_importing_peft():
    code = "import sys; print([type(f).__name__ for f in sys.meta_path]); print('peft' in sys.modules)"
    finders, peft_loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    ).stdout.splitlines()
    assert "RouteFinder" in finders, "the start-up hook is not installed in this environment; run `pip install -e .`"
    assert peft_loaded == "False"


def test_a_failing_route_warns_and_never_breaks_the_watched_import(monkeypatch):
    from dora_plugins import startup

    monkeypatch.setattr(startup, "route", lambda name: 1 / 0)
    finder = RouteFinder()
    finder.names = frozenset({"json.tool"})
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    monkeypatch.delitem(sys.modules, "json.tool", raising=False)
    with pytest.warns(RuntimeWarning, match="could not route .*ZeroDivisionError"):
        module = __import__("json.tool", fromlist=["main"])
    assert callable(module.main)


def trl_sft(tmp_path, name: str, setting: str | None) -> subprocess.CompletedProcess:
    trl = shutil.which("trl", path=os.path.dirname(sys.executable)) or "trl"
    env = {k: v for k, v in os.environ.items() if k != "DORA_PLUGINS_ROUTE"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    if setting is not None:
        env["DORA_PLUGINS_ROUTE"] = setting
    args = [
        "sft", "--model_name_or_path", str(tmp_path / "model"), "--dataset_name", str(tmp_path / "data"),
        "--output_dir", str(tmp_path / name), "--max_steps", "3", "--use_peft", "--use_dora", "--lora_r", "4",
        "--lora_alpha", "8", "--lora_dropout", "0.0", "--lora_target_modules", *TARGETS, "--report_to", "none",
        "--bf16", "false", "--use_cpu", "true", "--per_device_train_batch_size", "4", "--seed", "0",
        "--save_strategy", "no", "--learning_rate", "1e-2",
    ]  # fmt: skip
    result = subprocess.run([trl, *args], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_trl_sft_use_dora_trains_on_our_layer_to_the_same_adapter(tmp_path):
    from safetensors.torch import load_file

    make_tiny_llama().save_pretrained(tmp_path / "model")
    word_tokenizer().save_pretrained(tmp_path / "model")
    (tmp_path / "data").mkdir()
    rows = [{"text": " ".join(f"t{(i * 7 + j) % 120 + 5}" for j in range(16))} for i in range(16)]
    (tmp_path / "data" / "train.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    routed, stock = trl_sft(tmp_path, "routed", None), trl_sft(tmp_path, "stock", "0")
    assert "runs dora-plugins' DoRA layer" in routed.stderr and "dora-plugins" not in stock.stderr
    ours, theirs = (load_file(tmp_path / name / "adapter_model.safetensors") for name in ("routed", "stock"))
    assert ours.keys() == theirs.keys() and any("lora_magnitude_vector" in key for key in ours)
    for key, value in theirs.items():
        assert max_rel(ours[key], value) < 1e-4, key
    model = PeftModel.from_pretrained(make_tiny_llama(), tmp_path / "routed")  # stock PEFT reads it
    assert any("lora_magnitude_vector" in name for name, _ in model.named_parameters())
    assert torch.isfinite(model(input_ids=torch.arange(5, 17)[None]).logits).all()
