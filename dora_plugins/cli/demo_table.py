"""The table ``dora demo`` prints: per model (base, LoRA, DoRA) and scoring, accuracy, standard error, unread answers.

Laid out as the paper's table 1 (one column per benchmark and the plain mean), with chance level and the
paper's LLaMA2-7B DoRA row below for reference. Scorings: the two extractors of the generation tasks
(``improved``, ``original``) and, where the option-text tasks ran, ``option text`` (``acc`` and ``acc_norm``).
"""

from __future__ import annotations

import math
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
TEXT_GROUP = "dora_commonsense_text"
FILTERS = ("improved", "original")
# (scoring name in the table, metric of the dora_*_text tasks)
TEXT_SCORINGS = (("option text acc", "acc"), ("option text acc_norm", "acc_norm"))
# LLaMA2-7B + DoRA (r=32): Liu et al. 2024, table 1, as in NVlabs/DoRA commonsense_reasoning/README.md.
PAPER_LLAMA2_7B_DORA = [71.8, 83.7, 76.0, 89.1, 82.6, 83.7, 68.2, 82.4, 79.7]


def _cells(results: dict, tasks: list[str], metric: str, key: str) -> dict:
    """Accuracy (%) and its standard error per task, then the plain mean and the mean's standard error."""
    accuracy = [100 * results["results"][task][f"{metric},{key}"] for task in tasks]
    stderr = [100 * _number(results["results"][task].get(f"{metric}_stderr,{key}")) for task in tasks]
    mean_stderr = math.sqrt(sum(s * s for s in stderr)) / len(stderr)  # independent benchmarks, plain mean
    return {"scores": accuracy + [sum(accuracy) / len(accuracy)], "stderr": stderr + [mean_stderr]}


def _number(value) -> float:
    return float(value) if isinstance(value, int | float) else float("nan")  # lm-eval writes "N/A" for 1 item


def scores(results: dict) -> dict:
    """Per scoring: accuracy (%) per benchmark and their plain mean, standard errors, unread answers (generation)."""
    table = {}
    for name in FILTERS:
        tasks = [task for _, task, _ in COLUMNS]
        unread = [
            sum(1 for s in results["samples"].get(task, []) if s["filter"] == name and s["filtered_resps"][0] == "")
            for task in tasks
        ]
        table[name] = {**_cells(results, tasks, "acc", name), "unread": unread}
    if all(f"{task}_text" in results["results"] for _, task, _ in COLUMNS):
        for name, metric in TEXT_SCORINGS:
            table[name] = _cells(results, [f"{task}_text" for _, task, _ in COLUMNS], metric, "none")
    return table


def summarize(models: dict[str, dict], eval_dir: Path, groups: tuple[str, ...] = (GROUP,)) -> dict:
    """``models`` maps a row label (``LoRA``) to lm-eval's results; adds chance level, item counts and the paper."""
    first = next(iter(models.values()))
    counts = [first["n-samples"][task]["effective"] for _, task, _ in COLUMNS]
    text_counts = [first["n-samples"].get(f"{task}_text", {}).get("effective") for _, task, _ in COLUMNS]
    chance = [100 * _chance(eval_dir, benchmark, n) for (benchmark, _, _), n in zip(COLUMNS, counts, strict=True)]
    return {
        "columns": [title for _, _, title in COLUMNS] + ["Avg."],
        "groups": list(groups),
        "models": {label: scores(results) for label, results in models.items()},
        "chance": chance + [sum(chance) / len(chance)],
        "items": counts,
        "text_items": text_counts if None not in text_counts else None,
        "paper": PAPER_LLAMA2_7B_DORA,
    }


def _chance(eval_dir: Path, benchmark: str, count: int) -> float:
    """Expected accuracy of a uniform random guess over the first ``count`` items."""
    from dora_plugins.benchmarks import load_llm_adapters

    items = load_llm_adapters(eval_dir, benchmark)[:count]
    return sum(1 / len(item["options"]) for item in items) / len(items)


def row_label(model: str, scoring: str, unread: int | None = None) -> str:
    """``LoRA, improved (3 unread)``: the model, the scoring and, for generation, the answers it could not read."""
    return f"{model}, {scoring}" + ("" if unread is None else f" ({unread} unread)")


def _cell(value: float, stderr: float | None) -> str:
    if stderr is None:
        return f"{value:.1f}"
    return f"{value:.1f}±{stderr:.0f}" if not math.isnan(stderr) else f"{value:.1f}±?"


def format_table(table: dict) -> str:
    """The paper-style table: a row per model and scoring (± standard error), chance level, the paper's row."""
    rows = [
        (row_label(model, name, sum(cells["unread"]) if "unread" in cells else None), cells["scores"], cells["stderr"])
        for model, entry in table["models"].items()
        for name, cells in entry.items()
    ]
    rows += [("chance (random guess)", table["chance"], None), ("paper: LLaMA2-7B DoRA r=32", table["paper"], None)]
    label_width = max(len(label) for label, _, _ in rows)
    widths = [max(len(column), 9) for column in table["columns"]]
    header = " ".join([" " * label_width] + [c.rjust(w) for c, w in zip(table["columns"], widths, strict=True)])
    lines = [header, "-" * len(header)]
    for label, values, errors in rows:
        errors = errors or [None] * len(values)
        cells = [_cell(v, e).rjust(w) for v, e, w in zip(values, errors, widths, strict=True)]
        lines.append(" ".join([label.ljust(label_width), *cells]))
    items = ", ".join(f"{title} {n}" for (_, _, title), n in zip(COLUMNS, table["items"], strict=True))
    lines += [
        "",
        f"Accuracy in % ± standard error; items per benchmark: {items}. 'unread': generated answers the extractor "
        "could not read.",
    ]
    if table.get("text_items"):
        lines.append(f"Option text: the first {', '.join(map(str, sorted(set(table['text_items']))))} of those items.")
    if any("option text acc" in entry for entry in table["models"].values()):
        lines.append(
            "Generation (improved, original): the paper's protocol, the label read from the answer the model wrote. "
            "Option text: the option whose text is most likely after the same prompt (acc_norm: per byte)."
        )
    return "\n".join(lines)
