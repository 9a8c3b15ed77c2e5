"""The exact prompt templates of LLM-Adapters and the DoRA commonsense code (Hu et al. 2023; Liu et al. 2024).

Byte for byte as in NVlabs/DoRA ``commonsense_reasoning/``: the eval prompt of
``commonsense_evaluate.py`` (one space after "request.") and the training text of
``finetune.py`` (two spaces after "request.", blank lines holding 16 spaces). Scores are only
comparable with the paper's when these strings are exactly the same, whitespace included.
"""

from __future__ import annotations

_INDENT = " " * 16

EVAL_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request. \n\n"
    f"{_INDENT}### Instruction:\n"
    f"{_INDENT}{{instruction}}\n\n"
    f"{_INDENT}### Response:\n"
    f"{_INDENT}"
)

TRAIN_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.  \n\n"
    f"{_INDENT}### Instruction:\n"
    f"{_INDENT}{{instruction}}\n"
    f"{_INDENT}\n"
    f"{_INDENT}### Response:\n"
    f"{_INDENT}{{output}}"
)

TRAIN_TEMPLATE_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request. \n\n"
    f"{_INDENT}### Instruction:\n"
    f"{_INDENT}{{instruction}}\n"
    f"{_INDENT}\n"
    f"{_INDENT}### Input:\n"
    f"{_INDENT}{{input}}\n"
    f"{_INDENT}\n"
    f"{_INDENT}### Response:\n"
    f"{_INDENT}{{output}}"
)

RESPONSE_MARKER = "### Response:"


def eval_prompt(instruction: str) -> str:
    """The prompt the paper's evaluation script sends to the model for one instruction."""
    return EVAL_TEMPLATE.format(instruction=instruction)


def train_text(instruction: str, output: str, input: str = "") -> str:
    """One training example as the paper's ``finetune.py`` builds it (``generate_prompt``)."""
    if input:
        return TRAIN_TEMPLATE_WITH_INPUT.format(instruction=instruction, input=input, output=output)
    return TRAIN_TEMPLATE.format(instruction=instruction, output=output)
