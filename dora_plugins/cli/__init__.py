"""The ``dora`` command: a thin dispatcher; each subcommand lives in its own module.

Subcommand modules are imported only when run, so ``dora --help`` is instant.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module with ``main(argv) -> int``, one-line help). The command line is the one place
# where the core, trl_integration and lm_eval_tasks meet; each module imports its own stack.
COMMANDS = {
    "demo": ("dora_plugins.cli.demo", "Train, merge and score a tiny model offline: the whole pipeline in minutes."),
    "sft": ("trl_integration.cli", "Train a DoRA adapter with TRL's SFTTrainer from a recipe (like 'trl sft')."),
    "merge": ("dora_plugins.cli.merge", "Fold an adapter into its base model and save a plain transformers model."),
    "rescore": ("dora_plugins.cli.rescore", "Re-extract answers of saved generations; compare extractors."),
    "plugins": ("dora_plugins.cli.plugins", "List registered presets, benchmarks and extractors, and their plugins."),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: dora <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'dora <command> --help' for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from dora_plugins import __version__

        print(f"dora-plugins {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"dora: unknown command '{name}'.\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest)


def run() -> None:
    """Console-script entry point."""
    raise SystemExit(main())
