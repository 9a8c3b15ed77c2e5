"""The table ``dora demo`` prints: per model (base, LoRA, DoRA) and extractor, accuracy and unread answers.

Laid out as the paper's table 1 (one column per benchmark and the plain mean), with chance level and the
paper's LLaMA2-7B DoRA row below for reference.
"""

from __future__ import annotations

from pathlib import Path

# (LLM-Adapters benchmark, lm-eval task, column of the paper's table 1)
COLUMNS = [
    ("boolq", "dora_boolq", "BoolQ"),
    ("piqa", "dora_piqa", "PIQA"),
    ("social_i_qa", "dora_siqa", "SIQA"),
    ("hellaswag", "dora_hellaswag", "HellaSwag"),
    ("winogrande", "dora_winogrande", "WinoGrande"),
    ("ARC-Easy", "dora_arc_easy", "ARC-e"),
    ("ARC-Challenge", "dora_arc_challenge", "ARC-c"),
    ("openbookqa", "dora_openbookqa", "OBQA"),
]
GROUP = "dora_commonsense"
FILTERS = ("improved", "original")
# LLaMA2-7B + DoRA (r=32): Liu et al. 2024, table 1, as in NVlabs/DoRA commonsense_reasoning/README.md.
PAPER_LLAMA2_7B_DORA = [71.8, 83.7, 76.0, 89.1, 82.6, 83.7, 68.2, 82.4, 79.7]


def scores(results: dict) -> dict:
    """Per extractor: accuracy (%) per benchmark and their plain mean, and unread answers per benchmark."""
    table = {}
    for name in FILTERS:
        accuracy = [100 * results["results"][task][f"acc,{name}"] for _, task, _ in COLUMNS]
        unread = [
            sum(1 for s in results["samples"].get(task, []) if s["filter"] == name and s["filtered_resps"][0] == "")
            for _, task, _ in COLUMNS
        ]
        table[name] = {"scores": accuracy + [sum(accuracy) / len(accuracy)], "unread": unread}
    return table


def summarize(models: dict[str, dict], eval_dir: Path) -> dict:
    """``models`` maps a row label (``LoRA``) to lm-eval's results; adds chance level, item counts and the paper."""
    first = next(iter(models.values()))
    counts = [first["n-samples"][task]["effective"] for _, task, _ in COLUMNS]
    chance = [100 * _chance(eval_dir, benchmark, n) for (benchmark, _, _), n in zip(COLUMNS, counts, strict=True)]
    return {
        "columns": [title for _, _, title in COLUMNS] + ["Avg."],
        "models": {label: scores(results) for label, results in models.items()},
        "chance": chance + [sum(chance) / len(chance)],
        "items": counts,
        "paper": PAPER_LLAMA2_7B_DORA,
    }


def _chance(eval_dir: Path, benchmark: str, count: int) -> float:
    """Expected accuracy of a uniform random guess over the first ``count`` items."""
    from dora_plugins.benchmarks import load_llm_adapters

    items = load_llm_adapters(eval_dir, benchmark)[:count]
    return sum(1 / len(item["options"]) for item in items) / len(items)


def row_label(model: str, extractor: str, unread: int) -> str:
    """``LoRA, improved (3 unread)``: the model, the extractor and how many answers it could not read."""
    return f"{model}, {extractor} ({unread} unread)"


def format_table(table: dict) -> str:
    """The paper-style table: two rows (extractors) per model, chance level, and the paper's LLaMA2-7B DoRA row."""
    rows = [
        (row_label(model, name, sum(entry[name]["unread"])), entry[name]["scores"])
        for model, entry in table["models"].items()
        for name in FILTERS
    ]
    rows += [("chance (random guess)", table["chance"]), ("paper: LLaMA2-7B DoRA r=32", table["paper"])]
    label_width = max(len(label) for label, _ in rows)
    widths = [max(len(column), 5) for column in table["columns"]]
    header = " ".join([" " * label_width] + [c.rjust(w) for c, w in zip(table["columns"], widths, strict=True)])
    lines = [header, "-" * len(header)]
    for label, values in rows:
        cells = [f"{value:.1f}".rjust(w) for value, w in zip(values, widths, strict=True)]
        lines.append(" ".join([label.ljust(label_width), *cells]))
    items = ", ".join(f"{title} {n}" for (_, _, title), n in zip(COLUMNS, table["items"], strict=True))
    lines += ["", f"Accuracy in %; items per benchmark: {items}. 'unread': answers the extractor could not read."]
    return "\n".join(lines)
