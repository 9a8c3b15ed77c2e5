"""``dora pull NAME``: make a named real model a local transformers folder and print that folder last."""

from __future__ import annotations

import argparse

from dora_plugins.pull import CACHE_ENV, MODELS


def main(argv: list[str]) -> int:
    models = "\n".join(f"  {name:<14} {model.description}" for name, model in MODELS.items())
    parser = argparse.ArgumentParser(
        prog="dora pull",
        description=__doc__,
        epilog=f"models:\n{models}\n\nThe name also works wherever a command takes a base model "
        "(dora sft --model_name_or_path, dora merge --base, dora analyze --base, dora demo --model).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", help=f"the model: {', '.join(MODELS)}")
    parser.add_argument(
        "--cache-dir", help=f"where models are kept (default: ${CACHE_ENV}, else ~/.cache/dora-plugins)"
    )
    args = parser.parse_args(argv)

    from dora_plugins.pull import pull

    print(pull(args.name, args.cache_dir))  # pull looks the name up before it downloads anything
    return 0
