"""dora demo: the whole pipeline on a tiny model, offline, in about two minutes on two CPU cores.

1. build a small LLaMA-architecture model and its tokenizer locally (nothing is downloaded);
2. train a LoRA and a DoRA adapter with the same budget on the bundled sample of the eight benchmarks, in the
   paper's training format, with 'dora sft' (TRL's SFTTrainer), keeping checkpoints;
3. merge each adapter into the base model ('dora merge');
4. score the base model, LoRA and DoRA with lm-eval on 'dora_commonsense' (bundled evaluation items, which
   the training sample does not contain), with both answer extractors;
5. measure how far each run moved its weights in magnitude and direction ('dora analyze', the paper's figure 2).

The tiny model learns the answer format (its unread answers fall to about zero) but not the tasks: accuracy
stays near chance. The demo shows the pipeline, not the paper's numbers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from dora_plugins.cli.demo_table import COLUMNS, GROUP

DEMO_DATA = Path(__file__).resolve().parents[1] / "demo_data"
TRAIN_FILE = DEMO_DATA / "train.json"
EVAL_DIR = DEMO_DATA / "eval"
# (preset of 'dora sft', row label): the two adapters, trained with the same budget
METHODS = [("lora", "LoRA"), ("dora", "DoRA")]
BASE_LABEL = "base model (no adapter)"
STEPS = 5


@dataclass(frozen=True)
class Settings:
    """How much the demo trains and scores; both adapters get the same."""

    max_steps: int  # optimizer steps per adapter
    limit: int | None  # items per benchmark; None: all of the bundled sample (40 each)
    checkpoints: int  # checkpoints kept per run, evenly spaced, for 'dora analyze'
    learning_rate: float = 5e-3  # a tiny random model needs far more than the paper's 2e-4
    batch_size: int = 8
    seed: int = 0


FULL = Settings(max_steps=120, limit=None, checkpoints=6)
QUICK = Settings(max_steps=10, limit=4, checkpoints=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dora demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", metavar="DIR", help="keep the models, adapters, checkpoints and results here")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing non-empty --output once the new run is complete"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"a shortened run for CI: {QUICK.max_steps} steps, 4 items per benchmark"
    )
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL

    if args.output:
        from dora_plugins.outputs import check_output, replace_directory

        target = check_output(args.output, overwrite=args.overwrite)
        replace_directory(target, lambda folder: run(folder, settings, final=target))
    else:
        workdir = Path(tempfile.mkdtemp(prefix="dora-demo-"))
        try:
            run(workdir, settings)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    print(next_steps(args.output))
    return 0


def run(workdir: Path, settings: Settings, final: Path | None = None) -> None:
    """The five steps; everything is written under ``workdir``, which is moved to ``final`` afterwards if given."""
    import torch

    from dora_plugins.cli.demo_table import format_table, summarize
    from dora_plugins.merge import merge_adapter

    # A 0.1M-parameter model is fastest on one thread: more only add synchronisation, and on a
    # shared CPU they wait for each other (15x slower per step, measured on 2 busy cores).
    torch.set_num_threads(1)
    base = workdir / "base"
    _step(1, "Building a tiny LLaMA model and a tokenizer locally (nothing is downloaded)")
    build_base(str(base), settings.seed)
    for preset, label in METHODS:
        _step(2, f"Training a {label} adapter with 'dora sft' (TRL SFTTrainer), {settings.max_steps} steps")
        train(str(base), str(workdir / preset), preset, settings)
        if final is not None:  # adapters name their base model by path: the one it will have after the move
            _set_base_model_path(workdir / preset, final / "base")
    _step(3, "Merging each adapter into the base model ('dora merge')")
    for preset, _ in METHODS:
        merge_adapter(str(base), str(workdir / preset), str(workdir / f"{preset}-merged"), dtype="float32")
    _step(4, f"Scoring the base model, LoRA and DoRA with lm-eval on {GROUP} (bundled evaluation sample)")
    models = {BASE_LABEL: base, **{label: workdir / f"{preset}-merged" for preset, label in METHODS}}
    results = evaluate(models, settings)
    table = summarize(results, EVAL_DIR)
    _step(5, "Measuring magnitude and direction change of every checkpoint ('dora analyze')")
    drawn = analyze(base, [workdir / preset for preset, _ in METHODS], workdir)
    report = {"settings": asdict(settings), "table": table, "lm_eval": {k: _jsonable(v) for k, v in results.items()}}
    (workdir / "results.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print()
    print(format_table(table))
    print(EXPLANATION)
    if not drawn:
        from dora_plugins.cli.analyze import PLOT_HINT

        print(f"\nNote: {PLOT_HINT}; dynamics.csv and dynamics.json are written.")


EXPLANATION = """
A 0.1M-parameter model trained for a few minutes learns the answer format ('the correct answer is <label>',
with the labels each benchmark allows: the unread answers fall to about zero) but not the tasks: its accuracy
stays near chance. The demo shows the pipeline (train, merge, score with the paper's prompts and extractors,
analyze), not the paper's numbers."""


def _set_base_model_path(run_dir: Path, base: Path) -> None:
    """Point the adapter and every checkpoint of ``run_dir`` at ``base``."""
    for config_file in run_dir.rglob("adapter_config.json"):
        config = json.loads(config_file.read_text())
        config["base_model_name_or_path"] = str(base)
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _step(number: int, title: str) -> None:
    print(f"\n[{number}/{STEPS}] {title}", flush=True)


def build_base(directory: str, seed: int) -> None:
    """The tiny base model and a tokenizer trained on the demo's own training and evaluation text."""
    from dora_plugins.benchmarks import load_llm_adapters
    from dora_plugins.cli.demo_model import save_base_model
    from dora_plugins.prompts import eval_prompt, train_text

    records = json.loads(TRAIN_FILE.read_text())
    texts = [train_text(r["instruction"], r["output"], r.get("input", "")) for r in records]
    for benchmark, _, _ in COLUMNS:
        texts += [eval_prompt(item["instruction"]) for item in load_llm_adapters(EVAL_DIR, benchmark)]
    save_base_model(directory, texts, seed=seed)


def train(base: str, output: str, preset: str, settings: Settings) -> None:
    """``dora sft`` with a preset (the paper's r=32, alpha=64) on the bundled sample, as a user would call it."""
    from trl_integration.cli import main as sft

    argv = [
        "--model_name_or_path", base,
        "--dataset_name", str(TRAIN_FILE),
        "--output_dir", output,
        "--preset", preset,
        "--lora_dropout", "0",  # a few hundred records, seen about once: nothing to regularize, and faster
        # Loss on the response only: a model this small cannot also learn the instruction text in a
        # hundred steps. The paper (and 'dora sft' by default) trains on the whole text.
        "--train_on_inputs", "false",
        "--max_steps", str(settings.max_steps),
        "--per_device_train_batch_size", str(settings.batch_size),
        "--learning_rate", str(settings.learning_rate),
        "--lr_scheduler_type", "linear",
        "--warmup_steps", str(max(1, settings.max_steps // 20)),
        "--logging_steps", str(max(1, settings.max_steps // 5)),
        "--save_strategy", "steps",
        "--save_steps", str(settings.max_steps // settings.checkpoints),
        "--save_only_model", "true",
        "--report_to", "none",
        "--seed", str(settings.seed),
        "--dtype", "float32",
        "--gradient_checkpointing", "false",  # pointless for a model this small, and slower
        "--dataloader_pin_memory", "false",
    ]  # fmt: skip
    sft(argv)


def evaluate(models: dict[str, Path], settings: Settings) -> dict[str, dict]:
    """lm-eval's ``evaluate`` of each model on the group, with the bundled data as task metadata ``data_dir``.

    ``lm_eval.evaluate`` rather than ``simple_evaluate``: the same scoring without the environment report
    (``pip list`` and friends in subprocesses), which took longer than scoring the quick demo's items.
    """
    import logging

    import torch
    from lm_eval import evaluate as lm_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager, get_task_dict

    from lm_eval_tasks.discovery import TASK_DIR

    # lm-eval warns once per task that custom datasets take --metadata: noise for a first run.
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    # Our tasks only: indexing lm-eval's thousands of built-in task files takes longer than the scoring.
    tasks = TaskManager(include_path=TASK_DIR, include_defaults=False, metadata={"data_dir": str(EVAL_DIR)})
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = {}
    for label, model in models.items():
        print(f"{label}:", flush=True)
        torch.manual_seed(settings.seed)
        lm = HFLM(pretrained=str(model), dtype="float32", batch_size=32, device=device)
        results[label] = lm_evaluate(lm, get_task_dict([GROUP], tasks), limit=settings.limit)
    return results


def analyze(base: Path, runs: list[Path], output: Path) -> bool:
    """``dora analyze`` of every checkpoint of ``runs`` into ``output``; False when matplotlib is missing."""
    from dora_plugins.checkpoint_dynamics import read_checkpoint
    from dora_plugins.cli.analyze import analyze as analyze_checkpoints
    from dora_plugins.cli.analyze import base_folder, pick_figure_module, summary, write_report

    checkpoints = [read_checkpoint(path) for run in runs for path in sorted(run.glob("checkpoint-*"))]
    rows = analyze_checkpoints(base_folder(str(base)), checkpoints, [])
    figure_module = pick_figure_module(rows, None)
    print(summary(rows, figure_module))
    return write_report(output, rows, figure_module)


def _jsonable(results: dict) -> dict:
    """The parts of lm-eval's results worth keeping: scores, sample counts, and every generation."""
    keep = ("results", "groups", "n-samples", "configs", "versions", "samples")
    return {key: results[key] for key in keep if key in results}


def next_steps(output: str | None) -> str:
    """What to run next, for a real model on a GPU."""
    kept = (
        f"Kept in {output}: base/, lora/ and dora/ (adapters and checkpoints), lora-merged/, dora-merged/, "
        "results.json (scores and generations), dynamics.csv/.json/.png (the weight dynamics)."
        if output
        else "Pass --output DIR to keep the adapters, checkpoints, merged models, results and the dynamics figure."
    )
    return "\n".join(
        [
            "",
            kept,
            "",
            "Next, with a real model (LLaMA2-7B, one GPU; see the README's 'Train' and 'Evaluate' sections):",
            "  dora sft --config llama2_7b_dora --dataset_name /path/to/commonsense_170k.json "
            "--output_dir runs/llama2_7b_dora",
            "  lm_eval --model hf --model_args pretrained=meta-llama/Llama-2-7b-hf,peft=runs/llama2_7b_dora "
            "--tasks dora_commonsense --batch_size 16",
            "  dora analyze --base meta-llama/Llama-2-7b-hf runs/llama2_7b_dora/checkpoint-* --output runs/dynamics",
        ]
    )
