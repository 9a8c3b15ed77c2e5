"""``lm_eval --model hf --model_args pretrained=B,peft=A``: a DoRA adapter runs our layer, with stock PEFT's answers.

The stock command, as users run it: the routing hook sends the adapter's ``LoraConfig(use_dora=True)`` to our
layer and says so on stderr. Its generations (the paper's 4 beams) must be stock PEFT's, which lm-eval's own
``HFLM.generate_until`` gives in this process with routing off, on the very contexts and settings the command
logged. Greedy decoding and LoRA adapters are checked in this process, routed and not.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from helpers import REPO, eval_tokenizer, make_tiny_llama, perturb_adapters
from peft import LoraConfig, get_peft_model

from dora_plugins.peft_layer import DoraLinear, route_peft
from dora_plugins.prompts import eval_prompt

DATA_DIR = REPO / "dora_plugins" / "demo_data" / "eval"
ROUTED = "runs on dora-plugins' layer"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny LLaMA for a locally built tokenizer, a trained-looking DoRA adapter and a LoRA one."""
    root = tmp_path_factory.mktemp("peft")
    items = json.loads((DATA_DIR / "piqa" / "test.json").read_text())[:4]
    tokenizer = eval_tokenizer([eval_prompt(item["instruction"]) for item in items] * 3)
    tokenizer.save_pretrained(root / "model")
    make_tiny_llama(vocab_size=len(tokenizer), max_position_embeddings=2048).save_pretrained(root / "model")
    for name, use_dora in (("dora", True), ("lora", False)):
        config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], use_dora=use_dora)
        model = get_peft_model(make_tiny_llama(vocab_size=len(tokenizer), max_position_embeddings=2048), config)
        perturb_adapters(model, seed=3)
        model.save_pretrained(root / name)
    return root


@pytest.fixture(scope="module")
def command_run(models):
    """``lm_eval`` on 4 PIQA items with the paper's 4 beams, a DoRA adapter, the environment as users have it."""
    out, model_args = models / "lm_eval", f"pretrained={models / 'model'},peft={models / 'dora'},dtype=float32"
    cmd = [
        "lm_eval", "--model", "hf", "--model_args", model_args,
        "--tasks", "dora_piqa", "--device", "cpu", "--batch_size", "1", "--limit", "4",
        "--gen_kwargs", "num_beams=4,max_gen_toks=12", "--metadata", json.dumps({"data_dir": str(DATA_DIR)}),
        "--log_samples", "--output_path", str(out),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "DORA_PLUGINS_ROUTE"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=models, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    (samples_file,) = out.glob("*/samples_dora_piqa_*.jsonl")
    rows = [json.loads(line) for line in samples_file.read_text().splitlines()]
    rows = [row for row in rows if row["filter"] == "improved"]
    return rows, result.stderr


def generate_until(root, adapter: str, routed: bool, contexts: list[str], gen_kwargs: dict):
    """lm-eval's own generation path (``HFLM.generate_until``) for ``contexts``; and the adapted q_proj."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    route_peft(routed)
    lm = HFLM(pretrained=str(root / "model"), peft=str(root / adapter), dtype="float32", device="cpu", batch_size=1)
    requests = [Instance("generate_until", {}, (context, dict(gen_kwargs)), i) for i, context in enumerate(contexts)]
    return lm.generate_until(requests), lm.model.base_model.model.model.layers[0].self_attn.q_proj


def test_stock_command_runs_a_dora_adapter_on_our_layer_and_answers_as_stock_peft(models, command_run):
    rows, log = command_run
    assert ROUTED in log
    contexts = [row["arguments"]["gen_args_0"]["arg_0"] for row in rows]
    gen_kwargs = rows[0]["arguments"]["gen_args_0"]["arg_1"]
    assert len(contexts) == 4 and gen_kwargs["num_beams"] == 4
    stock, q_proj = generate_until(models, "dora", False, contexts, gen_kwargs)
    assert not isinstance(q_proj, DoraLinear)
    assert any(text.strip() for text in stock)
    assert [row["resps"][0][0] for row in rows] == stock


@pytest.mark.parametrize("adapter", ["dora", "lora"])
def test_greedy_generations_routed_equal_stock_and_lora_loads_as_before(models, command_run, adapter):
    contexts = [row["arguments"]["gen_args_0"]["arg_0"] for row in command_run[0]]
    greedy = {"until": ["\n\n"], "max_gen_toks": 12, "do_sample": False}
    routed, routed_q = generate_until(models, adapter, True, contexts, greedy)
    stock, stock_q = generate_until(models, adapter, False, contexts, greedy)
    assert isinstance(routed_q, DoraLinear) == (adapter == "dora") and not isinstance(stock_q, DoraLinear)
    assert routed == stock


def test_lm_eval_requests_compute_each_norm_once_per_call_with_the_same_answers(models, monkeypatch):
    """HFLM's request methods run inside the inference cache: one norm per DoRA layer for a whole call (not one
    per request), with the answers and log-likelihoods of one call per request."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from dora_plugins import dora

    route_peft(True)
    lm = HFLM(pretrained=str(models / "model"), peft=str(models / "dora"), dtype="float32", device="cpu", batch_size=1)
    layers = sum(isinstance(module, DoraLinear) for module in lm.model.modules())
    norms = []
    real_norm = dora.weight_norm
    monkeypatch.setattr(dora, "weight_norm", lambda *args, **kwargs: norms.append(1) or real_norm(*args, **kwargs))
    items = json.loads((DATA_DIR / "piqa" / "test.json").read_text())[:3]
    contexts = [eval_prompt(item["instruction"]) for item in items]
    greedy = {"until": ["\n\n"], "max_gen_toks": 6, "do_sample": False}
    generations = [Instance("generate_until", {}, (c, dict(greedy)), i) for i, c in enumerate(contexts)]
    scores = [Instance("loglikelihood", {}, (c, " yes"), i) for i, c in enumerate(contexts)]
    for method, requests in (("generate_until", generations), ("loglikelihood", scores)):
        norms.clear()
        together = getattr(lm, method)(requests, disable_tqdm=True)
        assert len(norms) == layers > 0, method
        apart = [getattr(lm, method)([request], disable_tqdm=True)[0] for request in requests]
        assert len(norms) == layers * (1 + len(requests)), method
        assert together == apart, method
