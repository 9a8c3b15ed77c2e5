"""``dora sft``: TRL's ``trl sft`` command line, training a DoRA adapter on LLM-Adapters data.

    dora sft --config llama3_8b_dora [--model_name_or_path ...] [--max_steps 100] [...]

Built on ``trl.TrlParser`` with TRL's own dataclasses (``ScriptArguments``, ``SFTConfig``,
``ModelConfig``) plus :class:`~trl_integration.arguments.DoraArguments`, so TRL's flags and
YAML keys work as in ``trl sft``. ``--config`` takes a YAML file or the name of a shipped recipe
(``trl_integration/recipes/*.yaml``). Defaults that differ from ``trl sft``: ``max_length`` 256
(the paper's cutoff); bf16 only where the GPU supports it, and ``use_cpu`` where there is no
accelerator (a CPU-only machine needs no flag); the preset's rank, alpha, dropout and targets
unless ``--lora_*`` flags say otherwise.
"""

from __future__ import annotations

from pathlib import Path

from dora_plugins.errors import ConfigError, MissingFileError
from dora_plugins.suggestions import did_you_mean

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
PAPER_CUTOFF_LEN = 256


def main(argv: list[str]) -> int:
    """Parse ``argv`` (TRL flags, ours, ``--config``), check everything, train and save. Returns the exit status."""
    from .train import prepare, run

    parser = make_parser()
    argv = resolve_config(list(argv), parser)
    script_args, training_args, model_args, dora_args = parser.parse_args_and_config(args=argv)
    trainer = prepare(script_args, training_args, model_args, dora_args)
    run(trainer, model_args, dora_args)
    trainer.accelerator.print(f"Adapter saved to {training_args.output_dir}")
    return 0


def make_parser():
    """``TrlParser`` over TRL's SFT dataclasses and ours, with the defaults ``dora sft`` changes."""
    from trl import ModelConfig, ScriptArguments, SFTConfig, TrlParser

    from .arguments import DoraArguments

    parser = TrlParser(
        (ScriptArguments, SFTConfig, ModelConfig, DoraArguments),
        prog="dora sft",
        description="Train a DoRA adapter with TRL's SFTTrainer on LLM-Adapters records (the DoRA paper's recipe).",
    )
    parser.set_defaults(lora_r=None, lora_alpha=None, lora_dropout=None, max_length=PAPER_CUTOFF_LEN)
    parser.set_defaults(**_device_defaults())
    return parser


def _device_defaults() -> dict:
    """On a machine without an accelerator: no bf16 (TRL's default fails there) and ``use_cpu``.

    ``use_cpu`` makes transformers set up DDP on gloo when several processes are launched
    (``accelerate launch --multi_gpu --num_processes N`` or ``torchrun``) instead of N separate runs.
    Where a GPU supports bf16, TRL's default (bf16 on) stays.
    """
    import torch

    accelerator = getattr(torch, "accelerator", None)
    if accelerator.is_available() if accelerator is not None else torch.cuda.is_available():
        return {} if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else {"bf16": False}
    return {"bf16": False, "use_cpu": True}


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


def check_config_keys(path: Path, parser) -> None:
    """Raise a ``ConfigError`` naming each key of the YAML ``path`` that no option of ``parser`` takes."""
    import yaml

    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config {path} is not valid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"Config {path} must be a YAML mapping of option: value.")
    known = {action.dest for action in parser._actions} | {"env"}
    unknown = [key for key in config if key not in known]
    if unknown:
        hints = "".join(did_you_mean(key, known, naming_value=True) for key in unknown)
        raise ConfigError(
            f"Unknown key(s) {unknown} in config {path}.{hints} Keys are the options of 'dora sft --help'."
        )
