"""dora demo: train LoRA and DoRA on a real pretrained model, score them with lm-eval, and draw the paper's figure 2.

By default, on SmolLM2-135M-Instruct ('dora pull smollm2-135m'; --model takes another name or folder), offline,
within a stated budget of 15 minutes on two idle CPU cores, which it checks and reports phase by phase at the end:

1. make the base model available ('dora pull');
2. train a LoRA adapter and 3. a DoRA adapter with the same budget on the bundled training records of the eight
   benchmarks, in the paper's training format, with 'dora sft' (TRL's SFTTrainer), keeping checkpoints;
4. score the base model, LoRA and DoRA with the stock lm-eval on the bundled evaluation items (never a training
   record): 'dora_commonsense' (generation, both answer extractors, unread answers counted) and
   'dora_commonsense_text' (log-likelihood of each option's text, what the base model knows);
5. measure how far each run moved its weights in magnitude and direction ('dora analyze', the paper's figure 2).

--tiny (and --quick, a shortened --tiny for CI) runs the same pipeline on a random 0.1M-parameter model built
locally in seconds, and merges each adapter ('dora merge'): it shows the pipeline, not what a model learns.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

from dora_plugins.cli.demo_clock import Clock, choose_threads
from dora_plugins.cli.demo_settings import OPTION_TEXT, QUICK, REAL, TINY, Settings

DEMO_DATA = Path(__file__).resolve().parents[1] / "demo_data"
TRAIN_FILE = DEMO_DATA / "train.json"
EVAL_DIR = DEMO_DATA / "eval"
# (preset of 'dora sft', row label): the two adapters, trained with the same budget
METHODS = [("lora", "LoRA"), ("dora", "DoRA")]
BASE_LABEL = "base model (no adapter)"
DEFAULT_MODEL = "smollm2-135m"


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dora demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", metavar="DIR", help="keep the adapters, checkpoints, results and figure here")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing non-empty --output once the new run is complete"
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="NAME_OR_PATH",
        help=f"the base model: a 'dora pull' name or a transformers folder (default: {DEFAULT_MODEL})",
    )
    parser.add_argument("--tiny", action="store_true", help="a random 0.1M-parameter model built locally (seconds)")
    parser.add_argument(
        "--quick", action="store_true", help=f"--tiny, shortened for CI: {QUICK.max_steps} steps, 4 items per benchmark"
    )
    parser.add_argument(
        "--max_steps", type=int, metavar="N", help="optimizer steps per adapter (shorter runs; the budget is stated "
        "for the default)"
    )  # fmt: skip
    parser.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="generated answers per benchmark (at most 40; option text: at most as many)",
    )
    parser.add_argument(
        "--text_limit", type=int, metavar="N", help="option-text items per benchmark (0: no option-text scoring)"
    )
    parser.add_argument(
        "--threads", type=int, metavar="N", help="CPU threads for torch (default: the cores the load average "
        "leaves idle, at least 1; the tiny model: 1)"
    )  # fmt: skip
    return parser


def settings_for(args: argparse.Namespace) -> Settings:
    """The run's settings: --quick, --tiny or the real model, with --max_steps / --limit applied."""
    from dora_plugins.errors import ConfigError

    settings = QUICK if args.quick else TINY if args.tiny else REAL
    bounds = (("--max_steps", args.max_steps, 1, None), ("--limit", args.limit, 1, 40),
              ("--text_limit", args.text_limit, 0, 40), ("--threads", args.threads, 1, None))  # fmt: skip
    for flag, value, low, high in bounds:
        if value is not None and (value < low or (high is not None and value > high)):
            allowed = f"{low} or more" if high is None else f"{low} to {high}"
            raise ConfigError(f"{flag} {value}: must be {allowed}")
    if args.max_steps is not None:
        settings = dataclasses.replace(
            settings, max_steps=args.max_steps, checkpoints=min(settings.checkpoints, args.max_steps)
        )
    if args.limit is not None:
        text_limit = None if settings.text_limit is None else min(settings.text_limit, args.limit)
        settings = dataclasses.replace(settings, limit=args.limit, text_limit=text_limit)
    if args.text_limit is not None:
        groups = tuple(g for g in settings.groups if g != OPTION_TEXT) + ((OPTION_TEXT,) if args.text_limit else ())
        settings = dataclasses.replace(settings, text_limit=args.text_limit or None, groups=groups)
    return settings


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    settings = settings_for(args)
    model = None if settings.tiny else args.model
    clock = Clock(None if settings.budget_minutes is None else 60 * settings.budget_minutes)
    use_threads(*choose_threads(args.threads, settings.tiny), settings)
    if args.output:
        from dora_plugins.outputs import check_output, replace_directory

        target = check_output(args.output, overwrite=args.overwrite)
        kept = replace_directory(target, lambda folder: run(folder, settings, model, clock, final=target))
        print(next_steps(str(target), kept, settings))
    else:
        workdir = Path(tempfile.mkdtemp(prefix="dora-demo-"))
        try:
            run(workdir, settings, model, clock)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        print(next_steps(None, [], settings))
    return 0


def use_threads(threads: int, why: str, settings: Settings) -> None:
    """Set torch's CPU threads; say how many, and the budget the run is checked against."""
    import torch

    torch.set_num_threads(threads)
    budget = "" if settings.budget_minutes is None else f"Budget: {settings.budget_minutes:g} min on 2 idle CPU cores. "
    print(f"{budget}CPU threads: {threads} ({why}).", flush=True)


def run(workdir: Path, settings: Settings, model: str | None, clock: Clock, final: Path | None = None) -> list[str]:
    """The steps; everything is written under ``workdir``, which is moved to ``final`` afterwards if given.

    Returns the names of what it kept, for the closing message.
    """
    from dora_plugins.cli import demo_steps
    from dora_plugins.cli.demo_table import format_table, summarize

    final_dir = final or workdir
    plan = demo_steps.Plan(settings)
    with clock.phase("base model (pull or build)"):
        base = demo_steps.make_base(plan, workdir, model, TRAIN_FILE, EVAL_DIR)
    for preset, label in METHODS:
        plan.step(f"Training a {label} adapter with 'dora sft' (TRL SFTTrainer): {settings.describe_training()}")
        with clock.phase(f"train {label}"):
            demo_steps.train(base, workdir / preset, preset, settings, TRAIN_FILE)
        if settings.tiny and final is not None:  # adapters name their base by path: the one it has after the move
            demo_steps.set_base_model_path(workdir / preset, final / "base")
    models = {BASE_LABEL: (base, None), **{label: (base, workdir / preset) for preset, label in METHODS}}
    if settings.merge:
        plan.step("Merging each adapter into the base model ('dora merge')")
        with clock.phase("merge"):
            models.update(demo_steps.merge(base, workdir, METHODS))
    plan.step(f"Scoring the base model, LoRA and DoRA with lm-eval: {settings.describe_scoring()}")
    results = demo_steps.evaluate(models, settings, EVAL_DIR, clock)
    table = summarize(results, EVAL_DIR, settings.groups)
    plan.step("Measuring magnitude and direction change of every checkpoint ('dora analyze')")
    with clock.phase("analyze"):
        drawn = demo_steps.analyze(base, [workdir / preset for preset, _ in METHODS], workdir, final_dir)
    timing = clock.report()
    report = {
        "model": model or "tiny (random, built locally)",
        "settings": dataclasses.asdict(settings),
        "timing": timing,
        "table": table,
        "lm_eval": {k: demo_steps.jsonable(v) for k, v in results.items()},
    }
    (workdir / "results.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print()
    print(format_table(table))
    print(settings.explanation)
    print()
    print(clock.format())
    if not drawn:
        from dora_plugins.cli.analyze import PLOT_HINT

        print(f"\nNote: {PLOT_HINT}; dynamics.csv and dynamics.json are written.")
    return ["dynamics.png"] if drawn else []


def next_steps(output: str | None, kept: list[str], settings: Settings) -> str:
    """Where the results are, and what to run next with a larger model on a GPU."""
    if output:
        folders = (
            "base/, lora/ and dora/ (adapters and checkpoints), lora-merged/, dora-merged/"
            if settings.merge
            else "lora/ and dora/ (PEFT adapters, each with its checkpoint-*)"
        )
        figure = ", dynamics.png (the figure)" if "dynamics.png" in kept else ""
        where = (
            f"Kept in {output}: {folders}, results.json (scores and generations), dynamics.csv and dynamics.json "
            f"(the weight dynamics){figure}."
        )
    else:
        where = "Pass --output DIR to keep the adapters, checkpoints, results and the dynamics figure."
    return "\n".join(
        [
            "",
            where,
            "",
            "Next, with a larger model (LLaMA2-7B, one GPU; see docs/demo.md and the README's 'Train' and 'Evaluate'):",
            "  dora sft --config llama2_7b_dora --dataset_name /path/to/commonsense_170k.json "
            "--output_dir runs/llama2_7b_dora",
            "  lm_eval --model hf --model_args pretrained=meta-llama/Llama-2-7b-hf,peft=runs/llama2_7b_dora "
            "--tasks dora_commonsense --batch_size 16",
            "  dora analyze --base meta-llama/Llama-2-7b-hf runs/llama2_7b_dora/checkpoint-* --output runs/dynamics",
        ]
    )
