"""What :mod:`perf.matrix` prints and writes: the ratio table, the comparison of two runs, the Markdown section.

A ratio is computed per repetition (both times from the same interleaved repetition) and shown as
``median [lowest-highest]``; targets (:data:`TARGETS`) are judged on the median.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import subprocess
from pathlib import Path

import torch

# (kind, mode) -> {ratio: maximum}: the targets (time; memory where a memory ratio is named). Generation's
# target is judged through lm-eval (kind lm_eval, one norm per run); model.generate (kind generate) shows the floor
# of one norm per call, with no target.
TARGETS = {
    ("train", "dropout0"): {"time ours/lora": 1.05},
    ("train", "paper"): {"time ours/peft_dora": 1.00, "saved ours/peft_dora": 1.00, "peak ours/peft_dora": 1.00},
    ("lm_eval", "greedy"): {"time ours/lora": 1.05},
    ("lm_eval", "beams4"): {"time ours/lora": 1.05},
}
# In float32 the answers of ours must be PEFT's DoRA's; in bf16 rounding may change some (counted, not judged).
EXACT_DTYPES = ("float32", "float64")
RATIOS = ("ours/lora", "ours/peft_dora")
# What the parts of one merged run may differ in.
SETTINGS = ("repetitions", "steps", "clock", "threads", "dtype", "allocator")
BEGIN, END = "<!-- perf.matrix: begin (generated, do not edit) -->", "<!-- perf.matrix: end -->"


def meta(args) -> dict:
    """Where and how the run was made."""
    import dora_plugins

    where = Path(dora_plugins.__file__).parent  # the measured layer's commit, also when PYTHONPATH picks another
    commit = subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    return {
        "commit": commit.stdout.strip() or "unknown",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device,
        "dtype": args.dtype,
        "clock": args.clock,
        "threads": torch.get_num_threads(),
        "repetitions": args.repetitions,
        "steps": args.steps,
        "compile_backend": args.compile_backend if args.compile else None,
        "torch": torch.__version__,
        "allocator": allocator(),
    }


def allocator() -> str:
    """glibc's mmap threshold as this process runs: fixed by ``MALLOC_MMAP_THRESHOLD_``, or glibc's adaptive default."""
    threshold = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    return f"mmap threshold {threshold}" if threshold else "glibc default"


def ratios(row: dict) -> dict[str, list[float]]:
    """``time ours/lora``, ``saved ours/peft_dora``, ... : per repetition for time, one value for memory."""
    seconds = row["seconds"]
    out = {}
    for pair in RATIOS:
        top, bottom = pair.split("/")
        out[f"time {pair}"] = [a / b for a, b in zip(*_aligned(seconds[top], seconds[bottom]), strict=True)]
        for kind, values in row["memory_mib"].items():
            if values.get(bottom):
                out[f"{kind} {pair}"] = [values[top] / values[bottom]]
    return out


def _aligned(top: list[float], bottom: list[float]) -> tuple[list[float], list[float]]:
    """Per-repetition pairs; a candidate timed in fewer repetitions (PEFT's DoRA in the lm_eval rows) stands with
    its median beside each repetition of the other."""
    if len(top) == len(bottom):
        return top, bottom
    if len(top) < len(bottom):
        return [statistics.median(top)] * len(bottom), bottom
    return top, [statistics.median(bottom)] * len(top)


def spread(values: list[float]) -> str:
    """``1.023 [1.010-1.041]``, or one value."""
    if not values or any(math.isnan(v) for v in values):
        return "-"
    middle = statistics.median(values)
    return f"{middle:.3f}" if len(values) == 1 else f"{middle:.3f} [{min(values):.3f}-{max(values):.3f}]"


def verdict(row: dict) -> str:
    """``met``, ``NOT met: time ours/lora`` or ``-`` (no target for this mode)."""
    targets = TARGETS.get((row["kind"], row["mode"]), {})
    values = ratios(row)
    missed = [k for k, t in targets.items() if k in values and statistics.median(values[k]) > t]
    if row.get("answers", {}).get("differ") and row.get("dtype", "float32") in EXACT_DTYPES:
        missed.append("answers differ from peft_dora")
    if not any(k in values for k in targets):
        return "-"
    return "NOT met: " + ", ".join(missed) if missed else "met"


COLUMNS = ("workload", "kind", "mode", "compiled", "dtype", "time ours/lora", "time ours/peft_dora",
           "saved ours/lora", "saved ours/peft_dora", "peak ours/lora", "peak ours/peft_dora",
           "answers ours!=peft_dora", "targets")  # fmt: skip
FIRST_RATIO = COLUMNS.index("time ours/lora")


def answers(row: dict) -> str:
    """``0 of 8``: the lm-eval answers of ours that differ from PEFT's DoRA's (``-`` for other kinds)."""
    counted = row.get("answers")
    return f"{counted['differ']} of {counted['of']}" if counted else "-"


def cells(row: dict) -> list[str]:
    values = ratios(row)
    head = [row["workload"], row["kind"], row["mode"], "yes" if row["compiled"] else "no", _dtype(row)]
    ratio_cells = [spread(values.get(column, [])) for column in COLUMNS[FIRST_RATIO:-2]]
    return [*head, *ratio_cells, answers(row), verdict(row)]


def _dtype(row: dict) -> str:
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(row.get("dtype", "float32"), row["dtype"])


def progress(row: dict) -> str:
    return "  ".join(f"{c}={v}" for c, v in zip(COLUMNS, cells(row), strict=True) if v != "-")


def table(results: dict) -> str:
    """The plain-text table of every row."""
    rows = [list(COLUMNS)] + [cells(row) for row in results["rows"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    m = results["meta"]
    return "\n".join([_header(m), *lines])


def _header(m: dict) -> str:
    compile_note = f", compiled with {m['compile_backend']}" if m.get("compile_backend") else ""
    return (
        (f"commits {m['commits']};" if m.get("commits") else f"commit {m['commit']}")
        + f" on {m['device']} ({m['dtype']}, {m['threads']} thread(s),"
        f" {m['clock']} clock, allocator {m.get('allocator', 'not recorded')}{compile_note});"
        f" {m['repetitions']} repetition(s) of {m['steps']} interleaved step(s): median ratio [lowest-highest]"
        + (f"; merged from {m['parts']} runs" if m.get("parts") else "")
        + "".join(f"; a part with {', '.join(f'{k} {v}' for k, v in part.items())}" for part in m.get("settings", []))
    )


def merge(parts: list[dict], mixed_commits: bool = False) -> dict:
    """One result from runs of the same commit made in parts (workload by workload, eager and compiled apart).

    The header is the first part's (with the compile backend of a part that compiled); a part measured with
    other repetitions, steps, clock, threads, dtype or allocator is listed in ``meta["settings"]``. Parts of different
    commits merge only with ``mixed_commits`` (rows added at a later commit whose layer is the same); the header
    then names the kinds of rows each commit measured.
    """
    parts = [_stamped(part) for part in parts]
    commits = list(dict.fromkeys(part["meta"]["commit"] for part in parts))
    if len(commits) > 1 and not mixed_commits:
        raise SystemExit(
            f"perf.matrix: the runs to merge measured different commits ({', '.join(sorted(commits))});"
            " --mixed-commits merges them, naming each commit's rows."
        )
    if len(parts) == 1:
        return parts[0]
    first = parts[0]["meta"]
    backends = [part["meta"]["compile_backend"] for part in parts if part["meta"].get("compile_backend")]
    meta = {**first, "parts": len(parts), "compile_backend": backends[0] if backends else None}
    if len(commits) > 1:
        kinds = {c: [row["kind"] for p in parts if p["meta"]["commit"] == c for row in p["rows"]] for c in commits}
        meta["commit"] = "+".join(commits)
        meta["commits"] = "; ".join(f"{c}: {', '.join(dict.fromkeys(kinds[c]))} rows" for c in commits)
    other = [{key: part["meta"][key] for key in SETTINGS} for part in parts]
    other = [values for values in other if any(values[key] != first[key] for key in SETTINGS)]
    if other:
        meta["settings"] = list({json.dumps(values, sort_keys=True): values for values in other}.values())
    rows = [row for part in parts for row in part["rows"]]
    order = {name: index for index, name in reversed(list(enumerate(row["workload"] for row in rows)))}
    return {"meta": meta, "rows": sorted(rows, key=lambda row: order[row["workload"]])}  # a workload's rows together


def _stamped(part: dict) -> dict:
    """The part with each row's dtype set (rows of runs made before the dtype was recorded per row)."""
    for row in part["rows"]:
        row.setdefault("dtype", part["meta"]["dtype"])
    part["meta"].setdefault("allocator", "not recorded")
    return part


def _key(row: dict) -> tuple:
    return row["workload"], row["kind"], row["mode"], row["compiled"], row.get("dtype", "float32")


def _label(row: dict) -> str:
    return " ".join(str(part) for part in _key(row)).replace("True", "compiled").replace("False", "eager")


def comparison(old: dict, new: dict) -> list[tuple[dict, str, list[float], list[float]]]:
    """``(row, ratio name, old values, new values)`` for every ratio both runs measured."""
    before = {_key(row): ratios(row) for row in old["rows"]}
    pairs = []
    for row in new["rows"]:
        for name, values in ratios(row).items():
            if name in before.get(_key(row), {}):
                pairs.append((row, name, before[_key(row)][name], values))
    return pairs


def compare(old: dict, new: dict) -> str:
    """Ratios of two runs side by side, row by row: median [lowest-highest] of each, and the change of median."""
    lines = [f"compare: old {old['meta']['commit']} -> new {new['meta']['commit']} (median [lowest-highest])"]
    for row, name, a, b in comparison(old, new):
        change = statistics.median(b) - statistics.median(a)
        lines.append(f"{_label(row):<48}{name:<22}{spread(a):>22} -> {spread(b):<22}({change:+.3f})")
    return "\n".join(lines)


def markdown_comparison(old: dict, new: dict) -> str:
    """The comparison as a Markdown table."""
    a_commit, b_commit = old["meta"]["commit"], new["meta"]["commit"]
    head = f"| workload | kind | mode | compiled | dtype | ratio | {a_commit} | {b_commit} | change |\n|" + "---|" * 9
    body = [
        f"| {row['workload']} | {row['kind']} | {row['mode']} | {'yes' if row['compiled'] else 'no'} | {_dtype(row)}"
        f" | {name}"
        f" | {spread(a)} | {spread(b)} | {statistics.median(b) - statistics.median(a):+.3f} |"
        for row, name, a, b in comparison(old, new)
    ]
    return "\n".join([head, *body]) + "\n"


def markdown(results: dict, old: dict | None = None) -> str:
    """The generated section: how the run was made, the table, and the comparison with ``old`` if given."""
    head = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)
    body = "\n".join("| " + " | ".join(cells(row)) + " |" for row in results["rows"])
    text = f"{_header(results['meta'])}.\n\n{head}\n{body}\n"
    if old:
        text += f"\nAgainst {_header(old['meta'])}:\n\n" + markdown_comparison(old, results)
    return text


def write_markdown(page: Path, results: dict, old: dict | None = None) -> None:
    """Replace what lies between the page's BEGIN and END markers (appended with them where absent)."""
    text = page.read_text() if page.exists() else ""
    section = f"{BEGIN}\n{markdown(results, old)}{END}"
    if BEGIN in text and END in text:
        start, end = text.index(BEGIN), text.index(END) + len(END)
        text = text[:start] + section + text[end:]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    page.write_text(text)
