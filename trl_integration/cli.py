"""``dora sft``: TRL's ``trl sft`` command line, training a DoRA adapter on LLM-Adapters data.

    dora sft --config llama3_8b_dora [--model_name_or_path ...] [--max_steps 100] [--dry_run] [...]

Built on ``trl.TrlParser`` with TRL's own dataclasses (``ScriptArguments``, ``SFTConfig`` as
:class:`~trl_integration.sft_config.DoraSFTConfig`, ``ModelConfig``) plus
:class:`~trl_integration.arguments.DoraArguments`, so TRL's flags and YAML keys work as in ``trl sft``.
``--config`` takes a YAML file or the name of a shipped recipe (``trl_integration/recipes/*.yaml``).
Defaults that differ from ``trl sft``: ``max_length`` 256 (the paper's cutoff); the batch split and the
dtypes of :class:`DoraSFTConfig` (``--dtype`` defaults to the mixed-precision dtype); the preset's rank,
alpha, dropout and targets unless ``--lora_*`` flags say otherwise. ``--help`` shows our options first.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from dora_plugins.errors import ConfigError, MissingFileError
from dora_plugins.suggestions import did_you_mean

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
PAPER_CUTOFF_LEN = 256
# The options --help lists first, in this order: DoraArguments' and those DoraSFTConfig adds to SFTConfig.
OWN_OPTIONS = (
    "preset", "global_batch_size", "max_per_device_train_batch_size", "precision", "dry_run", "val_set_size",
    "train_on_inputs", "detach_norm", "magnitude_only_modules", "merged_output_dir", "overwrite_merged_output_dir",
    "help",
)  # fmt: skip
# What torchrun / accelerate launch set: a dry run reads them, then parses as a single process.
LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def main(argv: list[str]) -> int:
    """Parse ``argv`` (TRL flags, ours, ``--config``), check everything, train and save. Returns the exit status."""
    parser = make_parser()
    argv = resolve_config(list(argv), parser)
    if _dry_run_requested(argv):
        return dry_run(argv, parser)
    from .train import prepare, run

    script_args, training_args, model_args, dora_args = parser.parse_args_and_config(args=argv)
    trainer = prepare(script_args, training_args, model_args, dora_args)
    trainer.accelerator.print(training_args.batch_plan.describe())
    run(trainer, model_args, dora_args)
    trainer.accelerator.print(f"Adapter saved to {training_args.output_dir}")
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


def _dry_run_requested(argv: list[str]) -> bool:
    from transformers.hf_argparser import string_to_bool

    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--dry_run", type=string_to_bool, nargs="?", const=True, default=False)
    early.add_argument("--config")
    known, _ = early.parse_known_args(argv)
    return known.dry_run or bool(known.config and load_yaml(Path(known.config)).get("dry_run"))


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
        usage="dora sft --config RECIPE|FILE.yaml [--model_name_or_path M] [--dataset_name D] [--output_dir O] "
        "[options]",
        description=_description(),
        formatter_class=_HelpFormatter,
    )
    parser.set_defaults(lora_r=None, lora_alpha=None, lora_dropout=None, max_length=PAPER_CUTOFF_LEN, dtype=None)
    return parser


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


def _config_action() -> argparse.Action:
    """``--config`` as help shows it; ``TrlParser`` consumes it before argparse runs."""
    return argparse.Action(
        ["--config"],
        dest="config",
        metavar="RECIPE|FILE.yaml",
        default=argparse.SUPPRESS,
        help="A shipped recipe (listed above) or a YAML file of the options below; flags override its values.",
    )


def recipe_names() -> list[str]:
    """The shipped recipes, by name (file stem)."""
    return sorted(path.stem for path in RECIPES_DIR.glob("*.yaml"))


def resolve_config(argv: list[str], parser) -> list[str]:
    """Replace a recipe name after ``--config`` by its path and reject unknown keys in the YAML, naming them."""
    for i, arg in enumerate(argv):  # --config=NAME, which HfArgumentParser's own pre-parse does not take
        if arg.startswith("--config="):
            argv[i : i + 1] = ["--config", arg.removeprefix("--config=")]
    if "--config" not in argv:
        return argv
    index = argv.index("--config") + 1
    if index >= len(argv):
        raise ConfigError(f"--config needs a YAML file or a recipe name ({', '.join(recipe_names())}).")
    path = Path(argv[index])
    if not path.is_file():
        shipped = RECIPES_DIR / f"{argv[index].removesuffix('.yaml')}.yaml"
        if not shipped.is_file():
            hint = did_you_mean(argv[index], recipe_names())
            raise MissingFileError(
                f"Config '{argv[index]}' is neither a file nor a shipped recipe.{hint} "
                f"Recipes: {', '.join(recipe_names())}."
            )
        path = shipped
    argv[index] = str(path)
    check_config_keys(path, parser)
    return argv


def load_yaml(path: Path) -> dict:
    """The mapping of option: value in the YAML file ``path``; a ``ConfigError`` for anything else."""
    import yaml

    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config {path} is not valid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"Config {path} must be a YAML mapping of option: value.")
    return config


def check_config_keys(path: Path, parser) -> None:
    """Raise a ``ConfigError`` naming each key of the YAML ``path`` that no option of ``parser`` takes."""
    known = {action.dest for action in parser._actions} | {"env"}
    unknown = [key for key in load_yaml(path) if key not in known]
    if unknown:
        hints = "".join(did_you_mean(key, known, naming_value=True) for key in unknown)
        raise ConfigError(
            f"Unknown key(s) {unknown} in config {path}.{hints} Keys are the options of 'dora sft --help'."
        )
