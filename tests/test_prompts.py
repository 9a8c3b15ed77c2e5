"""The LLM-Adapters / DoRA templates, byte for byte (NVlabs/DoRA commonsense_reasoning/*.py)."""

from __future__ import annotations

import json

from helpers import REPO

from dora_plugins.prompts import EVAL_TEMPLATE, TRAIN_TEMPLATE, eval_prompt, train_text

# Written out by hand from commonsense_evaluate.py / finetune.py (generate_prompt), not from our templates.
PAPER_EVAL = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request. "
    "\n\n                ### Instruction:\n                {instruction}\n\n"
    "                ### Response:\n                "
)
PAPER_TRAIN = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.  "
    "\n\n                ### Instruction:\n                {instruction}\n                \n"
    "                ### Response:\n                {output}"
)
PAPER_TRAIN_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request. \n\n                ### Instruction:\n"
    "                {instruction}\n                \n                ### Input:\n                {input}\n"
    "                \n                ### Response:\n                {output}"
)


def test_eval_prompt_is_the_papers_byte_for_byte():
    assert EVAL_TEMPLATE == PAPER_EVAL
    assert eval_prompt("Q?") == PAPER_EVAL.replace("{instruction}", "Q?")
    assert "request. \n\n" in eval_prompt("x") and "request.  " not in eval_prompt("x")  # ONE space
    assert eval_prompt("x").endswith("### Response:\n" + " " * 16)


def test_train_text_is_the_papers_byte_for_byte():
    assert TRAIN_TEMPLATE == PAPER_TRAIN
    text = train_text("Q?", "the correct answer is true")
    assert text == PAPER_TRAIN.replace("{instruction}", "Q?").replace("{output}", "the correct answer is true")
    assert "request.  \n\n" in text  # TWO spaces
    assert "Q?\n" + " " * 16 + "\n" in text  # the blank line holds 16 spaces


def test_train_text_with_input_uses_the_input_variant():
    text = train_text("Q?", "A", input="context")
    expected = PAPER_TRAIN_INPUT.replace("{instruction}", "Q?").replace("{input}", "context").replace("{output}", "A")
    assert text == expected
    assert train_text("Q?", "A", input="") == train_text("Q?", "A")


def test_braces_in_instructions_are_kept_verbatim():
    assert "{output} {0} }{" in eval_prompt("{output} {0} }{")
    assert train_text("{input}", "{instruction}").endswith("{instruction}")


def test_prompts_wrap_real_instructions_unchanged():
    # a real LLM-Adapters item, from the sample that ships with the package
    item = json.loads((REPO / "dora_plugins" / "demo_data" / "eval" / "boolq" / "test.json").read_text())[0]
    prompt = eval_prompt(item["instruction"])
    assert (
        prompt.split("### Instruction:\n" + " " * 16)[1].split("\n\n" + " " * 16 + "### Response:")[0]
        == item["instruction"]
    )
    assert train_text(item["instruction"], item["output"]).endswith(" " * 16 + item["output"])
