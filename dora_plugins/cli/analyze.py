"""dora analyze: how far checkpoints moved their weights in magnitude and in direction (the DoRA paper's figure 2).

    dora analyze --base BASE CHECKPOINT [CHECKPOINT ...] --output DIR

For every checkpoint and every weight matrix it changes, against the base model (Liu et al. 2024, section 2.2):

    delta_M = mean over output rows of | ||W'_n|| - ||W0_n|| |     (eq. 5; LoRA and FT: the implied ||W'_n||)
    delta_D = mean over output rows of 1 - cos(W'_n, W0_n)          (eq. 6)

A checkpoint is a PEFT adapter folder (LoRA or DoRA) or a fully fine-tuned model folder, such as the
out/checkpoint-N folders of a training run; its step is N (or global_step in its trainer_state.json). The
checkpoint-N folders of one folder form a run; pass several runs to compare methods. Adapters are read as
factors: W0 + sBA is built a block of rows at a time, never for a whole layer; weights are read one tensor at
a time from safetensors.

Writes into DIR (built beside it and swapped in when complete):
  dynamics.csv   one row per checkpoint and weight matrix: run, method, step, checkpoint, module, target,
                 delta_m, delta_d
  dynamics.json  the same rows, and per run and module the slope of delta_M fitted on delta_D
  dynamics.png   the paper's layout: delta_D on x, delta_M on y, a point per layer and step, one panel per
                 method, the fitted slope per run (the paper: negative for DoRA and FT, positive for LoRA).
                 Needs matplotlib: pip install 'dora-plugins[plot]'; without it the CSV and JSON are still written.

example:
  dora analyze --base runs/base runs/lora/checkpoint-* runs/dora/checkpoint-* --output runs/dynamics
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

FIGURE_MODULE = "q_proj"  # the paper's figure 2 shows the query matrices
REPORT_FILES = ["dynamics.csv", "dynamics.json", "dynamics.png"]
FIELDS = ["run", "method", "step", "checkpoint", "module", "target", "delta_m", "delta_d"]
PLOT_HINT = "matplotlib is not installed, so no dynamics.png was drawn: pip install 'dora-plugins[plot]'"


@dataclass(frozen=True)
class Row:
    """delta-M and delta-D of one weight matrix at one checkpoint (a line of dynamics.csv)."""

    run: str
    method: str
    step: int
    checkpoint: str
    module: str
    target: str
    delta_m: float
    delta_d: float


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)

    from dora_plugins.checkpoint_dynamics import read_checkpoint
    from dora_plugins.outputs import check_output, replace_directory

    checkpoints = [read_checkpoint(path) for path in args.checkpoints]
    inputs = {"base model": args.base, **{f"checkpoint {c.path}": c.path for c in checkpoints}}
    target = check_output(args.output, inputs, overwrite=args.overwrite)
    rows = analyze(base_folder(args.base), checkpoints, args.modules)
    figure_module = pick_figure_module(rows, args.figure_module)
    drawn = replace_directory(target, lambda folder: write_report(folder, rows, figure_module))
    print(summary(rows, figure_module))
    print(f"\nWrote {', '.join(REPORT_FILES if drawn else REPORT_FILES[:2])} to {args.output}")
    if not drawn:
        print(f"dora analyze: note: {PLOT_HINT}", file=sys.stderr)
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dora analyze", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="adapter or model folders")
    parser.add_argument(
        "--base",
        required=True,
        help="the base model the checkpoints were trained from (folder, hub id or a name of dora pull)",
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for dynamics.csv, .json and .png")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a non-empty --output once the new one is complete"
    )
    parser.add_argument(
        "--modules", nargs="+", default=[], metavar="NAME",
        help="analyze only these modules (q_proj ...); default: every module an adapter trains, and for full "
        "models the paper's q_proj k_proj v_proj up_proj down_proj",
    )  # fmt: skip
    parser.add_argument(
        "--figure-module", metavar="NAME", help=f"the module the figure shows (default: {FIGURE_MODULE}, as the paper)"
    )
    return parser


def base_folder(source: str):
    """The base model's weights, read lazily: a local folder, or a hub id resolved through the Hugging Face cache."""
    from dora_plugins.checkpoint_dynamics import WeightFolder
    from dora_plugins.models import check_model_source
    from dora_plugins.pull import resolve_model

    source = resolve_model(source)
    check_model_source(source)
    folder = Path(source).expanduser()
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(source, allow_patterns=["*.json", "*.safetensors"]))
    return WeightFolder(folder, "base model")


def analyze(base, checkpoints: list, modules: list[str]) -> list[Row]:
    """One :class:`Row` per checkpoint and analyzed weight matrix, in run and step order (with a progress bar)."""
    from tqdm.auto import tqdm

    from dora_plugins.checkpoint_dynamics import checkpoint_changes, run_labels

    labels = run_labels(checkpoints)
    rows = []
    for checkpoint in tqdm(sorted(checkpoints, key=lambda c: (c.run, c.step)), desc="Analyzing checkpoints"):
        for change in checkpoint_changes(base, checkpoint, modules):
            rows.append(
                Row(labels[checkpoint.run], checkpoint.method, checkpoint.step, str(checkpoint.path), change.module,
                    change.target, change.delta_m, change.delta_d)
            )  # fmt: skip
    return rows


def pick_figure_module(rows: list[Row], name: str | None) -> str:
    """``name``, which the rows must have; by default q_proj, or the first module the rows have without it."""
    from dora_plugins.errors import ConfigError
    from dora_plugins.suggestions import did_you_mean

    targets = sorted({row.target for row in rows})
    if (name or FIGURE_MODULE) in targets:
        return name or FIGURE_MODULE
    if name:
        raise ConfigError(
            f"--figure-module {name}: the checkpoints have no such module.{did_you_mean(name, targets)} "
            f"Analyzed modules: {', '.join(targets)}"
        )
    return targets[0]


def slopes(rows: list[Row]) -> dict[str, dict]:
    """Per run: its method and, per module, the least-squares slope of delta_M on delta_D over layers and steps."""
    import numpy as np

    runs: dict[str, dict] = {}
    for row in rows:
        run = runs.setdefault(row.run, {"method": row.method, "points": {}})
        run["points"].setdefault(row.target, []).append((row.delta_d, row.delta_m))
    fitted = {}
    for name, run in runs.items():
        fit = {}
        for target, points in sorted(run["points"].items()):
            x, y = np.array(points).T
            fit[target] = float(np.polyfit(x, y, 1)[0]) if len(points) > 1 and np.ptp(x) > 0 else None
        fitted[name] = {"method": run["method"], "slope": fit}
    return fitted


def write_report(folder: Path, rows: list[Row], figure_module: str) -> bool:
    """dynamics.csv, dynamics.json and (with matplotlib) dynamics.png in ``folder``; False when no figure."""
    folder = Path(folder)
    with open(folder / "dynamics.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)
    runs = slopes(rows)
    report = {"figure_module": figure_module, "runs": runs, "rows": [asdict(row) for row in rows]}
    (folder / "dynamics.json").write_text(json.dumps(report, indent=2) + "\n")
    try:
        import matplotlib  # noqa: F401 - the optional extra 'plot'
    except ImportError:
        return False
    plot(folder / "dynamics.png", rows, runs, figure_module)
    return True


def plot(path: Path, rows: list[Row], runs: dict[str, dict], figure_module: str) -> None:
    """The paper's figure 2: a panel per method of (delta_D, delta_M) points coloured by step; a line per run."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    methods = [m for m in ("LoRA", "DoRA", "FT") if any(run["method"] == m for run in runs.values())]
    steps = Normalize(min(row.step for row in rows), max(row.step for row in rows))
    figure = Figure(figsize=(4.2 * len(methods) + 1, 3.8), layout="constrained")
    axes = figure.subplots(1, len(methods), squeeze=False)[0]
    for ax, method in zip(axes, methods, strict=True):
        names = [name for name, run in runs.items() if run["method"] == method]
        for name, marker in zip(names, "osD^v<>", strict=False):
            mine = [row for row in rows if row.run == name and row.target == figure_module]
            x, y = np.array([row.delta_d for row in mine]), np.array([row.delta_m for row in mine])
            slope = runs[name]["slope"].get(figure_module)
            label = f"{name}: slope {'n/a' if slope is None else f'{slope:+.3g}'}"
            ax.scatter(x, y, c=[row.step for row in mine], cmap="viridis", norm=steps, marker=marker, label=label)
            if slope is not None:
                intercept = np.mean(y) - slope * np.mean(x)
                ax.plot(np.sort(x), intercept + slope * np.sort(x), color="0.4", linewidth=1)
        ax.set_title(method)
        ax.set_xlabel(r"$\Delta D$ (mean $1 - \cos$)")
        ax.set_ylabel(r"$\Delta M$ (mean $|m_t - m_0|$)")
        ax.legend(fontsize="small")
    figure.colorbar(ScalarMappable(steps, colormaps["viridis"]), ax=list(axes), label="training step")
    figure.suptitle(f"{figure_module}: magnitude vs direction change, a point per layer and checkpoint")
    figure.savefig(path, dpi=120)


def summary(rows: list[Row], figure_module: str) -> str:
    """One line per run: method, steps, the last checkpoint's mean delta_M / delta_D and the fitted slope."""
    lines = [f"{figure_module}, mean over layers at the last checkpoint, and the slope of delta_M on delta_D:"]
    for run, fit in slopes(rows).items():
        mine = [row for row in rows if row.run == run and row.target == figure_module]
        if not mine:
            continue
        last = [row for row in mine if row.step == mine[-1].step]
        delta_m, delta_d = (sum(getattr(r, k) for r in last) / len(last) for k in ("delta_m", "delta_d"))
        slope = fit["slope"][figure_module]
        steps = sorted({row.step for row in mine})
        lines.append(
            f"  {run} ({fit['method']}, steps {steps[0]}-{steps[-1]}): delta_M {delta_m:.4g}, delta_D {delta_d:.4g}, "
            f"slope {'n/a' if slope is None else f'{slope:+.3g}'}"
        )
    return "\n".join(lines)
