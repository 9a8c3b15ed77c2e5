"""The ``dora`` command: a thin dispatcher; each subcommand lives in its own module.

Subcommand modules are imported only when run, so ``dora --help`` is instant. User errors
(:class:`dora_plugins.errors.DoraError`) are caught here, once, for every subcommand: they print
``dora <command>: error: <message>`` on stderr and exit with status 2, with the traceback only under
``--debug`` or ``DORA_DEBUG=1``.
"""

from __future__ import annotations

import importlib
import os
import sys

# name -> (module with ``main(argv) -> int``, one-line help). The command line is the one place
# where the core, trl_integration and lm_eval_tasks meet; each module imports its own stack.
COMMANDS = {
    "demo": ("dora_plugins.cli.demo", "Train LoRA and DoRA on SmolLM2-135M and score them: <= 15 min on 2 CPU cores."),
    "sft": ("trl_integration.cli", "Train a DoRA adapter with TRL's SFTTrainer from a recipe (like 'trl sft')."),
    "merge": ("dora_plugins.cli.merge", "Fold an adapter into its base model and save a plain transformers model."),
    "rescore": ("dora_plugins.cli.rescore", "Re-extract answers of saved generations; compare extractors."),
    "table": ("dora_plugins.cli.table", "Print the paper's table from lm-eval results; Markdown, LaTeX, CSV, plot."),
    "analyze": ("dora_plugins.cli.analyze", "Magnitude vs direction change of checkpoints (the paper's figure 2)."),
    "pull": ("dora_plugins.cli.pull", "Download a named real model (smollm2-135m) into the cache; print its folder."),
    "plugins": ("dora_plugins.cli.plugins", "List registered presets, benchmarks and extractors, and their plugins."),
}
EXIT_USAGE = 2  # argparse's status for bad usage; ours for every user error
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what `yes | head` reports


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: dora [--debug] <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += [
        "",
        "Run 'dora <command> --help' for the options of a command.",
        "--debug (or DORA_DEBUG=1) shows the traceback of an error.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get("DORA_DEBUG", "") not in ("", "0")
    argv = [arg for arg in argv if arg != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else EXIT_USAGE
    if argv[0] in ("-V", "--version"):
        from dora_plugins import __version__

        print(f"dora-plugins {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        from dora_plugins.suggestions import did_you_mean

        print(f"dora: error: unknown command '{name}'.{did_you_mean(name, COMMANDS)}\n\n{usage()}", file=sys.stderr)
        return EXIT_USAGE
    return run_command(name, rest, debug)


def run_command(name: str, argv: list[str], debug: bool = False) -> int:
    """Run one subcommand under the error policy of the module docstring."""
    from dora_plugins.errors import DoraError

    try:
        return importlib.import_module(COMMANDS[name][0]).main(argv)
    except DoraError as exc:
        if debug:
            raise
        print(f"dora {name}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (`dora plugins --json | head`): stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def run() -> None:
    """Console-script entry point."""
    raise SystemExit(main())
