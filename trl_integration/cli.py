"""``dora sft``: TRL's ``trl sft`` command line, training a DoRA adapter on LLM-Adapters data.

    dora sft --config llama3_8b_dora [--model_name_or_path ...] [--max_steps 100] [--dry_run] [...]

Built on ``trl.TrlParser`` with TRL's own dataclasses (``ScriptArguments``, ``SFTConfig`` as
:class:`~trl_integration.sft_config.DoraSFTConfig`, ``ModelConfig``) plus
:class:`~trl_integration.arguments.DoraArguments`, so TRL's flags and YAML keys work as in ``trl sft``.
``--config`` takes a YAML file or the name of a shipped recipe (``trl_integration/recipes/*.yaml``).
Defaults that differ from ``trl sft``: ``max_length`` 256 (the paper's cutoff); the batch split and the
dtypes of :class:`DoraSFTConfig` (``--dtype`` defaults to the mixed-precision dtype); the preset's rank,
alpha, dropout and targets unless ``--lora_*`` flags say otherwise. ``--help`` shows the options a run
usually sets (:mod:`.common_options`), ``--help-all`` all of them, ours first.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import textwrap
from typing import TYPE_CHECKING

from .common_options import short_parser
from .preflight import RECIPES_DIR, preflight, recipe_names

__all__ = ["RECIPES_DIR", "main", "make_parser", "recipe_names"]

PAPER_CUTOFF_LEN = 256
# The options --help-all lists first, in this order: DoraArguments' and those DoraSFTConfig adds to SFTConfig.
OWN_OPTIONS = (
    "preset", "global_batch_size", "max_per_device_train_batch_size", "precision", "dry_run", "overwrite",
    "val_set_size", "train_on_inputs", "detach_norm", "magnitude_only_modules", "merged_output_dir",
    "overwrite_merged_output_dir", "help",
)  # fmt: skip
# What torchrun / accelerate launch set: a dry run reads them, then parses as a single process.
LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
USAGE = "dora sft --config RECIPE|FILE.yaml [--model_name_or_path M] [--dataset_name D] [--output_dir O] [options]"


def main(argv: list[str]) -> int:
    """Parse ``argv`` (TRL flags, ours, ``--config``), check everything, train and save. Returns the exit status.

    ``--help`` and every check that needs no model run before torch and trl are imported (:mod:`.preflight`).
    """
    if "--help-all" in argv:
        make_parser().print_help()
        return 0
    quick = short_parser(USAGE, _description(), _epilog())
    if "-h" in argv or "--help" in argv:
        quick.print_help()
        return 0
    argv, values = preflight(argv, quick, full_options)
    parser = make_parser()
    if values.dry_run:
        return dry_run(argv, parser)
    from .train import prepare, run

    script_args, training_args, model_args, dora_args = parser.parse_args_and_config(args=argv)
    trainer = prepare(script_args, training_args, model_args, dora_args)
    trainer.accelerator.print(training_args.batch_plan.describe())
    run(trainer, model_args, dora_args)
    trainer.accelerator.print(f"Adapter saved to {training_args.output_dir}")
    # Leaving a gloo group to the interpreter's exit can abort a rank ("terminate called without an active
    # exception") after the adapter is saved, and torchrun then reports the whole run as failed.
    trainer.accelerator.end_training()
    return 0


def dry_run(argv: list[str], parser) -> int:
    """Print the plan for the world size the environment announces; load no weights, start no process group."""
    from .batch import launch_data_parallel
    from .plan import dry_run as plan

    with _single_process():
        script_args, training_args, model_args, dora_args = parser.parse_args_and_config(args=argv)
    data_parallel = launch_data_parallel(use_cpu=training_args.use_cpu)
    print(plan(script_args, training_args, model_args, dora_args, data_parallel))
    return 0


@contextlib.contextmanager
def _single_process():
    """Hide the launcher's variables, so that parsing sets up one local process instead of joining a group."""
    saved = {name: os.environ.pop(name) for name in LAUNCH_VARIABLES if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


# The mix-in reads ArgumentParser's attributes: a type checker sees that base, the class is built on TrlParser.
if TYPE_CHECKING:
    _ParserBase = argparse.ArgumentParser
else:
    _ParserBase = object


class DoraSftParser(_ParserBase):
    """Mix-in for ``TrlParser``: help that starts with our options, the recipes and an example; TRL's follow."""

    def format_help(self) -> str:
        formatter = self._get_formatter()
        formatter.add_usage(self.usage, self._actions, self._mutually_exclusive_groups)
        formatter.add_text(self.description)
        ours = sorted((a for a in self._actions if a.dest in OWN_OPTIONS), key=lambda a: OWN_OPTIONS.index(a.dest))
        sections = (
            ("dora sft options (also recipe YAML keys)", [_config_action(), *ours]),
            ("TRL's options (as in 'trl sft'; also YAML keys)", [a for a in self._actions if a not in ours]),
        )
        for title, actions in sections:
            formatter.start_section(title)
            formatter.add_arguments(actions)
            formatter.end_section()
        return formatter.format_help()


def make_parser():
    """``TrlParser`` over TRL's SFT dataclasses and ours, with the defaults ``dora sft`` changes."""
    from trl import ModelConfig, ScriptArguments, TrlParser

    from .arguments import DoraArguments
    from .sft_config import DoraSFTConfig

    class DoraSftArgumentParser(DoraSftParser, TrlParser):
        pass

    parser = DoraSftArgumentParser(
        (ScriptArguments, DoraSFTConfig, ModelConfig, DoraArguments),
        prog="dora sft",
        usage=USAGE,
        description=_description(),
        formatter_class=_HelpFormatter,
    )
    parser.set_defaults(lora_r=None, lora_alpha=None, lora_dropout=None, max_length=PAPER_CUTOFF_LEN, dtype=None)
    for action in parser._actions:  # --no_X would repeat the help of --X
        if action.option_strings[0].startswith("--no_"):
            action.help, action.default = f"Same as --{action.dest} false.", argparse.SUPPRESS  # no "(default: ...)"
    return parser


def full_options() -> dict[str, str]:
    """Every option string of the full parser -> its field (slow: imports trl)."""
    return {option: action.dest for action in make_parser()._actions for option in action.option_strings}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's line breaks and shows each option's default."""


def _description() -> str:
    recipes = textwrap.fill(", ".join(recipe_names()), width=100, initial_indent="  ", subsequent_indent="  ")
    return (
        "Train a DoRA adapter with TRL's SFTTrainer on LLM-Adapters records, as the DoRA paper did.\n"
        "A recipe fixes the global batch; the machine decides per-device batch x accumulation.\n\n"
        f"Recipes (--config NAME):\n{recipes}\n\n"
        "Example (plan first, then train):\n"
        "  dora sft --config llama2_7b_dora --dataset_name commonsense_170k.json --output_dir runs/dora --dry_run\n"
        "  torchrun --nproc_per_node 8 -m dora_plugins sft --config llama2_7b_dora "
        "--dataset_name commonsense_170k.json --output_dir runs/dora"
    )


def _epilog() -> str:
    return (
        "Every option is also a YAML key of --config. These are the options a run usually sets; 'dora sft "
        "--help-all'\nlists all of them (TRL's logging, optimizer, scheduler, quantization, hub, ...; it loads "
        "trl, so it takes longer)."
    )


def _config_action() -> argparse.Action:
    """``--config`` as help shows it; ``TrlParser`` consumes it before argparse runs."""
    return argparse.Action(
        ["--config"],
        dest="config",
        metavar="RECIPE|FILE.yaml",
        default=argparse.SUPPRESS,
        help="A shipped recipe (listed above) or a YAML file of the options below; flags override its values.",
    )
