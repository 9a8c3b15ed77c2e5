"""``dora plugins``: every registered preset, benchmark and extractor, and who provided it."""

from __future__ import annotations

import argparse
import json

from dora_plugins import plugins


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dora plugins", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    sections = {
        "adapter presets": plugins.get_adapter_presets(),
        "benchmarks": plugins.get_benchmarks(),
        "answer extractors": plugins.get_answer_extractors(),
    }
    errors = plugins.load_errors()
    if args.json:
        data: dict[str, object] = {
            title: [{"name": r.name, "plugin": r.plugin, "description": r.description} for r in items.values()]
            for title, items in sections.items()
        }
        data["failed plugins"] = errors
        print(json.dumps(data, indent=2))
        return 0
    for title, items in sections.items():
        print(f"{title}:")
        for item in items.values():
            print(f"  {item.name:<16} {item.plugin:<24} {item.description}")
        if not items:
            print("  (none)")
    if errors:
        print("failed plugins:")
        for name, error in errors.items():
            print(f"  {name}: {error}")
    return 0
