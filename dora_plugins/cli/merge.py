"""``dora merge``: fold an adapter into its base model; the output loads with no PEFT involved."""

from __future__ import annotations

import argparse

from dora_plugins.models import DTYPES


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dora merge", description=__doc__)
    parser.add_argument("--base", required=True, help="base model: a folder, a hub id or a name of dora pull")
    parser.add_argument("--adapter", required=True, help="adapter directory written by save_pretrained")
    parser.add_argument("--output", required=True, help="directory for the merged model (safetensors)")
    parser.add_argument("--dtype", default="auto", choices=DTYPES, help="dtype to load the base in (default: auto)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing non-empty --output; its old contents stay until the new model is complete",
    )
    args = parser.parse_args(argv)

    from dora_plugins.merge import merge_adapter

    merge_adapter(args.base, args.adapter, args.output, dtype=args.dtype, overwrite=args.overwrite)
    print(f"Merged model written to {args.output}")
    return 0
