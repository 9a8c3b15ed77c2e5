"""The stock `lm_eval` command on `dora_commonsense`: a tiny local LLaMA, with and without a DoRA adapter.

The model is built so that its output is known: every layer adds nothing to the residual stream
(``o_proj`` and ``down_proj`` are zero), so the next token depends on the current token only, and
the embeddings and ``lm_head`` encode a chain. After any prompt (which ends with the same
whitespace token) it writes ``ANSWER`` and then EOS. ``ANSWER`` starts with a blank line: had
lm-eval stopped at "\\n\\n", as it does by default, both filters would see an empty response.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
from helpers import REPO, eval_tokenizer, make_tiny_llama
from peft import get_peft_model
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from dora_plugins import DoraConfig
from dora_plugins.benchmarks import BENCHMARKS
from dora_plugins.extract import extract_answer
from dora_plugins.prompts import eval_prompt
from dora_plugins.rescore import score_file

ANSWER = "\n\nThe correct answer is Solution2"  # improved reads solution2 on piqa; original (case-sensitive) nothing
pytestmark = pytest.mark.slow  # each run of the lm_eval command takes a minute or more

DATA_DIR = REPO / "dora_plugins" / "demo_data" / "eval"  # 40 real items per benchmark, shipped with the package
TASKS = {b.task: b.name for b in BENCHMARKS}
PAPER_GEN_KWARGS = {"until": [], "num_beams": 4, "do_sample": False, "max_gen_toks": 32}


def build_chain_model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A LLaMA whose greedy and beam-search continuation of any eval prompt is ANSWER, then EOS."""
    start = tokenizer(eval_prompt("x"), add_special_tokens=False)["input_ids"][-1]
    chain = [start, *tokenizer(ANSWER, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    assert len(set(chain)) == len(chain), "the chain needs distinct tokens"
    model = make_tiny_llama(
        vocab_size=len(tokenizer), max_position_embeddings=2048, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    with torch.no_grad():
        model.model.embed_tokens.weight.zero_()
        model.lm_head.weight.zero_()
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        links = zip(chain[:-1], chain[1:], strict=True)
        for dim, (token, next_token) in enumerate(links):  # one hidden dimension per link
            model.model.embed_tokens.weight[token, dim] = 1.0
            model.lm_head.weight[next_token, dim] = 2.0  # the RMSNorm makes the hidden 8.0: logit 16
    return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data_dir = DATA_DIR
    corpus = [eval_prompt(item["instruction"]) for b in TASKS.values() for item in read(data_dir, b)[:2]]
    tokenizer = eval_tokenizer(corpus + [ANSWER] * 50)
    model = build_chain_model(tokenizer)
    tokenizer.save_pretrained(root / "model")
    model.save_pretrained(root / "model")
    adapter = get_peft_model(model, DoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    adapter.save_pretrained(root / "adapter")
    return root, data_dir


def read(data_dir, benchmark: str) -> list[dict]:
    return json.loads((data_dir / benchmark / "test.json").read_text())


def lm_eval(root, data_dir, model_args: str, name: str, *extra: str) -> tuple[dict, dict[str, list[dict]]]:
    """Run the stock CLI on the group; return the results and the logged samples per task."""
    out = root / name
    cmd = [
        "lm_eval", "--model", "hf", "--model_args", model_args, "--tasks", "dora_commonsense",
        "--device", "cpu", "--batch_size", "1", "--limit", "2",
        "--metadata", json.dumps({"data_dir": str(data_dir)}), "--log_samples", "--output_path", str(out), *extra,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    (run_dir,) = out.iterdir()  # <output_path>/<model name>/
    (results_file,) = run_dir.glob("results_*.json")
    samples = {}
    for task in TASKS:
        (path,) = run_dir.glob(f"samples_{task}_*.jsonl")
        samples[task] = [json.loads(line) for line in path.read_text().splitlines()]
    return json.loads(results_file.read_text()), samples


def check_run(results: dict, samples: dict, data_dir, gen_kwargs: dict) -> None:
    for task, benchmark in TASKS.items():
        items = read(data_dir, benchmark)
        by_filter = {"improved": [], "original": []}
        for sample in samples[task]:
            item = items[sample["doc_id"]]
            prompt, sent_gen_kwargs = sample["arguments"]["gen_args_0"].values()
            assert prompt == eval_prompt(item["instruction"])  # the paper's template around the file's instruction
            assert sent_gen_kwargs == gen_kwargs
            assert sample["resps"] == [[ANSWER]]  # the whole generation, not cut at the blank line
            options = sample["doc"]["options"]
            expected = extract_answer(ANSWER, benchmark, sample["filter"], options)
            assert sample["filtered_resps"] == [expected]
            by_filter[sample["filter"]].append(float(expected == item["answer"]))
        for name, scores in by_filter.items():
            assert len(scores) == 2
            assert results["results"][task][f"acc,{name}"] == pytest.approx(sum(scores) / 2)
    piqa = {s["filter"]: s["filtered_resps"] for s in samples["dora_piqa"]}
    assert piqa == {"improved": ["solution2"], "original": [""]}  # the two filters really differ
    group = results["results"]["dora_commonsense"]
    for name in ("improved", "original"):
        assert group[f"acc,{name}"] == pytest.approx(sum(results["results"][t][f"acc,{name}"] for t in TASKS) / 8)


def test_lm_eval_scores_the_group_with_both_filters(setup):
    root, data_dir = setup
    results, samples = lm_eval(root, data_dir, f"pretrained={root / 'model'},dtype=float32", "base")
    check_run(results, samples, data_dir, PAPER_GEN_KWARGS)
    assert results["results"]["dora_piqa"]["acc,improved"] == 0.5  # item 2 of piqa is solution2
    check_rescore_of_logged_samples(root / "base", results)


def check_rescore_of_logged_samples(out, results: dict) -> None:
    """``dora rescore`` on lm-eval's samples files gives lm-eval's own accuracies, for both extractors."""
    files = sorted(out.glob("*/samples_dora_*.jsonl"))
    assert len(files) == len(TASKS)
    scores = {score.benchmark: score for path in files for score in score_file(path, None, None)}
    assert set(scores) == set(TASKS.values())
    for task, benchmark in TASKS.items():
        assert scores[benchmark].n == 2
        for name in ("improved", "original"):
            assert scores[benchmark].accuracy(name) == pytest.approx(results["results"][task][f"acc,{name}"])


def test_lm_eval_loads_a_dora_adapter_saved_by_dora_config(setup):
    root, data_dir = setup
    model_args = f"pretrained={root / 'model'},peft={root / 'adapter'},dtype=float32"
    results, samples = lm_eval(root, data_dir, model_args, "peft", "--gen_kwargs", "num_beams=1")  # greedy: faster
    assert results["config"]["model_args"]["peft"] == str(root / "adapter")
    # A fresh DoRA adapter is the identity: the same answers as the base model.
    check_run(results, samples, data_dir, {**PAPER_GEN_KWARGS, "num_beams": 1})


def test_lm_eval_shows_a_data_error_of_our_tasks_as_one_message(setup, tmp_path):
    root, _ = setup
    (tmp_path / "boolq").mkdir()
    (tmp_path / "boolq" / "test.json").write_text("[]")
    cmd = [
        "lm_eval", "--model", "hf", "--model_args", f"pretrained={root / 'model'}", "--tasks", "dora_boolq_mc",
        "--device", "cpu", "--metadata", json.dumps({"data_dir": str(tmp_path)}),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DORA_DEBUG": ""}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    message, hint = result.stderr.splitlines()[-2:]
    assert message == (
        f"lm_eval: error: {tmp_path}/boolq/test.json holds no items (an empty list): lm-eval needs at least one. "
        "Pass a data_dir whose boolq/test.json has LLM-Adapters' items."
    )
    assert hint == "(dora-plugins task; set DORA_DEBUG=1 to see the traceback)"
