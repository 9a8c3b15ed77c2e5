"""Batched beam search in lm-eval gives the paper's answers: those of ``model.generate``, one item at a time.

The paper's script generated each item alone with transformers' beam search (4 beams, 32 new tokens, no
stop criteria). lm-eval batches items (left padding, attention mask) and adds its own stop check, which
under beam search looked at the first rows only (``lm_eval_tasks/stopping.py``). The model here is a
random tiny LLaMA whose EOS is made likely enough that answers end anywhere from 0 to 32 tokens, so that
a stop check that cuts or keeps a candidate wrongly changes answers.
"""

from __future__ import annotations

import logging

import lm_eval
import pytest
import torch
from helpers import REPO
from lm_eval.models.utils_hf import MultiTokenEOSCriteria
from lm_eval.tasks import TaskManager

from dora_plugins.benchmarks import BENCHMARKS, load_llm_adapters
from dora_plugins.cli.demo_model import build_model, build_tokenizer
from dora_plugins.prompts import eval_prompt
from lm_eval_tasks import discovery

DATA_DIR = REPO / "dora_plugins" / "demo_data" / "eval"  # 40 real items per benchmark, shipped with the package
ITEMS = 8  # per benchmark
NOT_INSTALLED = "the startup hook did not patch lm-eval's stop check; run `pip install -e .`"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A random tiny LLaMA and its tokenizer; EOS scaled up so that answers have all lengths up to 32 tokens."""
    prompts = [eval_prompt(item["instruction"]) for b in BENCHMARKS for item in load_llm_adapters(DATA_DIR, b.name)]
    tokenizer = build_tokenizer(prompts, vocab_size=512)
    model = build_model(tokenizer, seed=0)
    with torch.no_grad():
        model.model.embed_tokens.weight[tokenizer.eos_token_id] *= 3.0  # tied: the EOS logit grows
    path = tmp_path_factory.mktemp("batching") / "model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def paper_generations(model_dir) -> dict[tuple[str, int], str]:
    """What the paper's script generates: ``model.generate`` on each item alone, beam search 4, 32 new tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    answers = {}
    for benchmark in BENCHMARKS:
        for i, item in enumerate(load_llm_adapters(DATA_DIR, benchmark.name)[:ITEMS]):
            inputs = tokenizer(eval_prompt(item["instruction"]), return_tensors="pt")
            with torch.no_grad():
                out = model.generate(**inputs, num_beams=4, do_sample=False, max_new_tokens=32)
            answers[benchmark.task, i] = tokenizer.decode(
                out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
            )
    return answers


def lm_eval_generations(model_dir, batch_size: str) -> dict[tuple[str, int], str]:
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    manager = TaskManager(include_defaults=False, include_path=discovery.TASK_DIR, metadata={"data_dir": str(DATA_DIR)})
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(model_dir), "dtype": "float32", "max_batch_size": 16},  # auto: 16 on a CPU
        tasks=["dora_commonsense"],
        task_manager=manager,
        limit=ITEMS,
        batch_size=batch_size,
        device="cpu",
        log_samples=True,
    )
    return {
        (task, sample["doc_id"]): sample["resps"][0][0]
        for task, samples in results["samples"].items()
        for sample in samples
        if sample["filter"] == "improved"
    }


def candidates(tokenizer, endings: list[list[int]]) -> torch.Tensor:
    """Rows of prompt + generated tokens, as transformers passes them to a stopping criterion."""
    prompt = tokenizer("### Response:", add_special_tokens=False)["input_ids"]
    return torch.tensor([prompt + ending for ending in endings])


def test_stop_check_answers_per_candidate_under_beam_search(model_dir):
    from transformers import AutoTokenizer

    assert getattr(MultiTokenEOSCriteria.__call__, "__dora_plugins_per_candidate__", False), NOT_INSTALLED
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    eos, word = tokenizer.eos_token_id, tokenizer("answer", add_special_tokens=False)["input_ids"][0]
    # Beam search, 1 item, 4 beams: transformers checks its 2 * 4 best continuations.
    rows = candidates(tokenizer, [[word, eos], [word, word], [word, word], [word, eos], *[[eos, word]] * 4])
    prompt_length = rows.shape[1] - 2

    def check(call):
        criteria = MultiTokenEOSCriteria(tokenizer.eos_token, tokenizer, prompt_length, batch_size=1)
        return call(criteria, rows, None)

    # lm-eval's own check reads row 0 only and stops every candidate (True for all) as soon as it ends in EOS;
    # ours finishes the candidates that end in EOS (as transformers does itself) and lets the others go on.
    assert check(MultiTokenEOSCriteria.__call__.__wrapped__) is True
    assert check(MultiTokenEOSCriteria.__call__).tolist() == [True, False, False, True] + [True] * 4


def test_stop_check_without_beam_search_is_lm_evals(model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    eos, word = tokenizer.eos_token_id, tokenizer("answer", add_special_tokens=False)["input_ids"][0]
    criteria = MultiTokenEOSCriteria(tokenizer.eos_token, tokenizer, candidates(tokenizer, [[]]).shape[1], 2)
    assert criteria(candidates(tokenizer, [[word, eos], [word, word]]), None) is False  # one item still runs
    assert criteria(candidates(tokenizer, [[word, eos, eos], [word, word, eos]]), None) is True  # both done


@pytest.mark.slow
def test_batch_sizes_1_8_and_auto_give_the_papers_generations_on_all_eight_tasks(model_dir):
    assert getattr(MultiTokenEOSCriteria.__call__, "__dora_plugins_per_candidate__", False), NOT_INSTALLED
    paper = paper_generations(model_dir)
    assert len(paper) == 8 * ITEMS
    lengths = sorted(len(answer) for answer in paper.values())
    assert lengths[0] == 0 and lengths[len(lengths) // 2] > 10  # some stop at once, most go on
    for batch_size in ("1", "8", "auto"):
        assert lm_eval_generations(model_dir, batch_size) == paper, f"batch size {batch_size}"


@pytest.mark.slow
def test_lm_eval_own_stop_check_changes_the_answers_of_beam_search(model_dir, monkeypatch):
    # Without the fix, batch size 1 already gives other answers (the search stopped early): the test above can fail.
    monkeypatch.setattr(MultiTokenEOSCriteria, "__call__", MultiTokenEOSCriteria.__call__.__wrapped__)
    paper = paper_generations(model_dir)
    unpatched = lm_eval_generations(model_dir, "1")
    assert sum(unpatched[key] != paper[key] for key in paper) >= 8
