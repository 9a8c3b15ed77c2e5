"""``dora table``: the DoRA paper's table 1 from lm-eval results, as text, Markdown, LaTeX, CSV or JSON.

One row per run and scoring method: ``improved`` and ``original`` (the two extractors of the dora_commonsense
generation tasks), ``mc`` (dora_commonsense_mc: log-likelihood of the label words) and ``text`` / ``text_norm``
(dora_commonsense_text: log-likelihood of each option's text, acc and acc_norm, as lm-eval's arc_easy); columns
BoolQ PIQA SIQA HellaSwag WinoGrande ARC-e ARC-c OBQA Avg. (accuracy in %), Unread (answers the extractor could
not read, from the samples that --log_samples wrote) and Protocol ("paper", or how the run departs from it: greedy,
--limit, few-shot, a chat template, another prompt, as lm-eval recorded it).

examples:
  lm_eval ... --tasks dora_commonsense,dora_commonsense_mc,dora_commonsense_text --log_samples --output_path results/
  dora table results/
  dora table results/ --reference LLaMA2-7B --format markdown
  dora table results/run_a results/run_b/results_2026-01-01T00-00-00.json --plot table.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dora_plugins.errors import ConfigError, OutputError


def main(argv: list[str] | None = None) -> int:
    from dora_plugins.table import PAPER_TABLE_1
    from dora_plugins.table_formats import FORMATS

    parser = argparse.ArgumentParser(
        prog="dora table", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", nargs="+", metavar="RESULTS", help="lm-eval --output_path folders or results files")
    parser.add_argument("--format", choices=FORMATS, default="text", help="output format (default: text)")
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="MODEL",
        help=f"add the paper's rows for MODEL ({', '.join(PAPER_TABLE_1)} or all); repeatable",
    )
    parser.add_argument("--plot", metavar="FILE.png", help="also draw grouped bars per benchmark (needs matplotlib)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --plot file")
    args = parser.parse_args(argv)

    from dora_plugins.table import read_table
    from dora_plugins.table_formats import plot, render

    plot_path = check_plot_path(args.plot, args.overwrite) if args.plot else None
    rows = read_table(args.results, args.reference)
    print(render(rows, args.format))
    if plot_path is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ConfigError(
                "--plot needs matplotlib, an optional extra: pip install 'dora-plugins[plot]'. "
                "The table above is complete; only the plot was not drawn."
            ) from None
        plot(rows, plot_path)
    return 0


def check_plot_path(given: str, overwrite: bool) -> Path:
    """The ``--plot`` file, checked before anything is read: an image file name, not an existing one unless asked."""
    path = Path(given).expanduser().resolve()
    if path.suffix.lower() not in (".png", ".pdf", ".svg", ".jpg"):
        raise ConfigError(f"--plot {given}: name an image file (.png, .pdf, .svg or .jpg), e.g. --plot table.png")
    if path.is_dir():
        raise OutputError(f"--plot {given} is a folder. Name a file, e.g. --plot {Path(given) / 'table.png'}")
    if path.exists() and not overwrite:
        raise OutputError(f"--plot {given} exists. Pass --overwrite to replace it, or choose another name.")
    return path
