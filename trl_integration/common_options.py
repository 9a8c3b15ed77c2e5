"""The options a ``dora sft`` user sets, for ``dora sft --help`` and for checks that run before trl loads.

``dora sft`` takes every option of TRL's ``trl sft`` (about 170), which ``--help-all`` lists. ``--help``
shows these instead, grouped, from a plain ``argparse`` parser that imports nothing heavy; the same parser
checks their values (a number, one of the choices) before torch and trl load. Defaults are those of the full
parser, which ``tests/trl_tests/test_sft_fast_cli.py`` checks.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from dora_plugins.errors import ConfigError


def to_bool(value: str | bool) -> bool:
    """``HfArgumentParser``'s reading of a bool option's value."""
    if isinstance(value, bool):
        return value
    if value.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if value.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{value}'")


def _or_none(kind: Callable) -> Callable:
    """``kind``, or None for ``none`` / ``null`` (as TRL's parser reads an optional number)."""

    def parse(value: str):
        return None if value.lower() in ("none", "null") else kind(value)

    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value"
    return parse


@dataclass(frozen=True)
class Option:
    """One option of the short help: its name (the field), how its value reads, its help and its default."""

    name: str
    help: str
    type: Callable[[str], object] = str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    default: object = None
    nargs: str | None = None


def _flag(name: str, help_: str, default: bool = False) -> Option:
    return Option(name, help_, to_bool, "true|false", default=default, nargs="?")


GROUPS: dict[str, list[Option]] = {
    "what to train, and where": [
        Option("model_name_or_path", "Base model: a folder, a hub id, or a name of 'dora pull' (smollm2-135m).",
               metavar="M"),
        Option("dataset_name", "LLM-Adapters JSON/JSONL file (instruction, input, output), or a hub dataset id.",
               metavar="D"),
        Option("output_dir", "Folder for checkpoints and the adapter: new or empty, unless you resume or overwrite.",
               metavar="O"),
        _flag("overwrite", "Train into a non-empty --output_dir; an earlier run there is started over (its "
              "checkpoints and adapter files are deleted when training starts), other files stay."),
        Option("resume_from_checkpoint", "Continue the run in --output_dir: true for its latest checkpoint, or a "
               "checkpoint-N folder.", metavar="true|PATH"),
        _flag("dry_run", "Print the plan (batches, steps, warmup, eval and save points, parameters, memory) from "
              "the model's config and the dataset; load and write nothing. Honours WORLD_SIZE."),
    ],
    "adapter": [
        Option("preset", "dora (r=32, alpha=64), dora_half (DoRA-dagger, r=16), lora, or a plugin's "
               "('dora plugins').", metavar="NAME", default="dora"),
        Option("lora_r", "Rank (default: the preset's).", _or_none(int), "R"),
        Option("lora_alpha", "Scaling alpha; s = alpha / r (default: the preset's).", _or_none(int), "A"),
        Option("lora_dropout", "Dropout on the adapter's input (default: the preset's).", _or_none(float), "P"),
        Option("lora_target_modules", "Modules to adapt, e.g. q_proj k_proj v_proj up_proj down_proj, or all-linear "
               "(default: the preset's).", metavar="NAME", nargs="+"),
    ],
    "training": [
        Option("learning_rate", "Peak learning rate (the paper: 1e-4 to 2e-4).", float, "LR", default=2e-05),
        Option("num_train_epochs", "Epochs (the paper: 3); max_steps wins when set.", float, "N", default=3.0),
        Option("max_steps", "Optimizer steps in all; -1: from num_train_epochs.", int, "N", default=-1),
        Option("warmup_steps", "Warmup steps (a value below 1: a fraction of all steps).", float, "N", default=0),
        Option("global_batch_size", "Examples per optimizer step over all processes (the paper: 16).",
               _or_none(int), "N"),
        Option("max_per_device_train_batch_size", "Largest batch your GPU holds; gradient accumulation makes up "
               "the rest of global_batch_size.", _or_none(int), "N"),
        Option("precision", "auto: bf16 where the GPU has it, else fp16; paper: fp16 as the paper's finetune.py. "
               "fp32 without a CUDA GPU.", choices=("auto", "paper"), default="auto"),
        Option("max_length", "Tokens per example; longer ones are cut (the paper: 256).", _or_none(int), "N",
               default=256),
        _flag("train_on_inputs", "Loss on the whole text, as the paper; false (or --no_train_on_inputs): loss on "
              "the response only.", default=True),
    ],
    "evaluation and checkpoints": [
        Option("val_set_size", "Records held out for evaluation (the paper: 120); 0: none.", int, "N", default=0),
        Option("eval_strategy", "When to evaluate (needs val_set_size).", choices=("no", "steps", "epoch"),
               default="no"),
        Option("eval_steps", "Evaluate every N steps (below 1: a fraction of all steps).", _or_none(float), "N"),
        Option("save_strategy", "When to write a checkpoint-N folder.", choices=("no", "steps", "epoch", "best"),
               default="steps"),
        Option("save_steps", "Save every N steps (below 1: a fraction of all steps).", float, "N", default=500),
        Option("save_total_limit", "Keep only the last N checkpoints.", _or_none(int), "N"),
        Option("merged_output_dir", "Also write the base model with the adapter merged in here (a new or empty "
               "folder; --overwrite_merged_output_dir replaces one).", metavar="DIR"),
    ],
}  # fmt: skip
# Read by the early checks, listed by --help-all only.
HIDDEN = [_flag("overwrite_merged_output_dir", "Replace a non-empty merged_output_dir.")]
OPTIONS = {option.name: option for group in [*GROUPS.values(), HIDDEN] for option in group}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line through the CLI's error policy, not argparse's usage + exit
        raise ConfigError(f"{message}. 'dora sft --help' lists the common options, --help-all all of them.")


def short_parser(usage: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """The parser of the common options: ``format_help()`` is ``dora sft --help``; ``parse_known_args`` checks
    their values (options it does not know pass through)."""
    parser = _Parser(
        prog="dora sft",
        usage=usage,
        description=description,
        epilog=epilog,
        add_help=False,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config = parser.add_argument_group("recipe")
    config.add_argument(
        "--config", metavar="RECIPE|FILE.yaml", help="A shipped recipe (listed above) or a YAML file of options "
        "(the YAML keys are the option names); flags override its values."
    )  # fmt: skip
    for title, options in [*GROUPS.items(), ("hidden", HIDDEN)]:
        group = parser.add_argument_group(title) if title != "hidden" else parser
        for option in options:
            shown = "" if option.default is None else f" (default: {option.default})"
            kwargs: dict = {"nargs": option.nargs, "metavar": option.metavar, "choices": option.choices}
            if option.type is to_bool:
                kwargs["const"] = True
            group.add_argument(
                f"--{option.name}",
                type=option.type,
                default=option.default,
                help=argparse.SUPPRESS if title == "hidden" else option.help + shown,
                **kwargs,
            )
    group = parser.add_argument_group("help")
    group.add_argument("-h", "--help", action="store_true", help="Show this help.")
    group.add_argument("--help-all", action="store_true", help="Show all options, TRL's included (slower: loads trl).")
    return parser
