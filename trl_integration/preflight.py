"""The checks of ``dora sft`` that need neither torch nor trl, run before either is imported.

A misspelt option, YAML key, recipe or preset, a bad value of a common option, a missing dataset file or
model folder, an output folder holding the user's files: each is answered in a second, not after the
20-35 s it takes to import trl on a busy machine. :func:`preflight` runs them on the raw command line;
:func:`trl_integration.train.check_run` runs the value checks again on the parsed arguments, for Python
callers and for what only the full parser knows.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path

from dora_plugins.errors import ConfigError, MissingFileError
from dora_plugins.outputs import check_output, check_run_output
from dora_plugins.suggestions import did_you_mean

from .common_options import OPTIONS
from .option_names import option_strings, sft_fields

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
COMMAND = "dora sft"
_CHECKPOINT = re.compile(r"checkpoint-\d+")
DEFAULT_OUTPUT_DIR = "trainer_output"  # TrainingArguments' output_dir when none is given


def recipe_names() -> list[str]:
    """The shipped recipes, by name (file stem)."""
    return sorted(path.stem for path in RECIPES_DIR.glob("*.yaml"))


def preflight(
    argv: list[str], parser: argparse.ArgumentParser, full_options: Callable[[], dict[str, str]]
) -> tuple[list[str], argparse.Namespace]:
    """``argv`` with the recipe resolved to its path, and the common options' values (YAML, then flags).

    Raises a :class:`~dora_plugins.errors.DoraError` for anything wrong that is known before loading trl.
    ``parser`` is :func:`~trl_integration.common_options.short_parser`'s; ``full_options`` gives every option
    string of the full parser, the slow way, where :func:`~trl_integration.option_names.sft_fields` cannot.
    """
    argv = resolve_config(list(argv))
    config = load_yaml(Path(argv[argv.index("--config") + 1])) if "--config" in argv else {}
    fields = sft_fields()
    options = option_strings(fields) if fields is not None else full_options()
    check_config_keys(config, {*options.values(), "env"}, argv)
    argv = canonical_options(argv, options)
    parser.set_defaults(**{key: value for key, value in config.items() if key in OPTIONS})
    values, _ = parser.parse_known_args(argv)
    check_values(values)
    return argv, values


def check_values(values) -> None:
    """The checks on option values that need no model: preset, dataset, model, evaluation, outputs, resume."""
    from dora_plugins.plugins import lookup
    from dora_plugins.pull import MODELS

    from .data import check_dataset_source

    lookup("preset", values.preset)
    if not values.dataset_name:
        raise ConfigError("No dataset: pass --dataset_name (a local LLM-Adapters JSON file or a hub dataset id).")
    if not values.model_name_or_path:
        raise ConfigError("No model: pass --model_name_or_path (a local directory, a hub id or 'smollm2-135m').")
    strategy = getattr(values.eval_strategy, "value", values.eval_strategy)
    if not values.val_set_size and strategy != "no":
        raise ConfigError(
            f"eval_strategy={strategy!r} needs held-out records: set --val_set_size (the paper: 120) or "
            "--eval_strategy no."
        )
    check_dataset_source(values.dataset_name)
    if values.model_name_or_path not in MODELS or Path(values.model_name_or_path).exists():
        from dora_plugins.models import check_model_source

        check_model_source(values.model_name_or_path)
    check_outputs(values)
    check_resume(values.resume_from_checkpoint, values.output_dir)


def check_outputs(values) -> None:
    """``--output_dir``: new, empty, resumed or ``--overwrite``; ``--merged_output_dir``: new or empty unless
    ``--overwrite_merged_output_dir``; neither may be, hold or lie in an input (nor the merge in the run)."""
    inputs = {"base model": values.model_name_or_path, "dataset": values.dataset_name}
    check_run_output(
        values.output_dir or DEFAULT_OUTPUT_DIR,
        inputs,
        overwrite=bool(values.overwrite),
        resume=resuming(values.resume_from_checkpoint),
        command=COMMAND,
    )
    if values.merged_output_dir:
        check_output(
            values.merged_output_dir,
            {**inputs, "training output (--output_dir)": values.output_dir or DEFAULT_OUTPUT_DIR},
            overwrite=bool(values.overwrite_merged_output_dir),
            option="--merged_output_dir",
            overwrite_flag="--overwrite_merged_output_dir",
        )


def resuming(resume) -> bool:
    """Whether ``--resume_from_checkpoint`` asks to resume (true, last or a path; not false, none or empty)."""
    return resume not in (None, False) and not (isinstance(resume, str) and resume.lower() in ("false", "", "none"))


def check_resume(resume, output_dir: str | None) -> None:
    """``--resume_from_checkpoint``: ``true``/``last`` needs a checkpoint-N folder in output_dir; a path must be a
    checkpoint folder."""
    if not resuming(resume):
        return
    if resume is True or str(resume).lower() in ("true", "last"):
        folder = Path(output_dir or DEFAULT_OUTPUT_DIR)
        if not folder.is_dir() or not any(_CHECKPOINT.fullmatch(p.name) and p.is_dir() for p in folder.iterdir()):
            raise MissingFileError(
                f"--resume_from_checkpoint {resume}: {folder} holds no checkpoint-N folder to resume from. "
                "Drop the flag to start a new run, or pass the output_dir of the run to resume."
            )
    elif not (Path(resume) / "trainer_state.json").is_file():
        raise MissingFileError(
            f"--resume_from_checkpoint {resume} is not a checkpoint folder (no trainer_state.json). Pass a "
            "checkpoint-N folder, or 'true' for the latest one in --output_dir."
        )


def canonical_options(argv: list[str], options: dict[str, str]) -> list[str]:
    """``argv`` with each ``--option`` spelt in full (argparse takes a unique prefix); an unknown one is an error."""
    out: list[str] = []
    for index, token in enumerate(argv):
        if token == "--":
            return out + argv[index:]
        if token.startswith("--") and token.partition("=")[0] not in ("--config", "--help", "--help-all"):
            name, equals, value = token.partition("=")
            if name not in options:
                matches = sorted({option for option in options if option.startswith(name)})
                if len(matches) != 1 or len({options[m] for m in matches}) != 1:
                    raise ConfigError(_unknown_option(name, matches, options))
                token = matches[0] + equals + value
        out.append(token)
    return out


def _unknown_option(name: str, matches: list[str], options: dict[str, str]) -> str:
    if matches:
        return f"Option {name} is ambiguous: it could be {', '.join(matches[:6])}. Spell it in full."
    hint = did_you_mean(name, options)
    return f"Unknown option {name}.{hint} 'dora sft --help' lists the common options, --help-all all of them."


def resolve_config(argv: list[str]) -> list[str]:
    """Replace a recipe name after ``--config`` by its path."""
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


def check_config_keys(config: dict, known: set[str], argv: list[str]) -> None:
    """Raise a ``ConfigError`` naming each key of the recipe that no option takes."""
    unknown = [key for key in config if key not in known]
    if unknown:
        path = argv[argv.index("--config") + 1]
        hints = "".join(did_you_mean(key, known, naming_value=True) for key in unknown)
        raise ConfigError(
            f"Unknown key(s) {unknown} in config {path}.{hints} Keys are the options of 'dora sft --help-all'."
        )
