"""The steps of ``dora demo``, each through the command or library a user would call: ``dora pull``, ``dora sft``
(TRL's SFTTrainer), ``dora merge``, the stock lm-eval (``HFLM`` with ``peft=``, ``lm_eval.evaluate``) and
``dora analyze``."""

from __future__ import annotations

import json
from pathlib import Path

from dora_plugins.cli.demo_clock import Clock
from dora_plugins.cli.demo_settings import OPTION_TEXT, Settings


class Plan:
    """Numbers the steps ``[1/5] ...``: five for a real model, six when the adapters are also merged."""

    def __init__(self, settings: Settings):
        self.total = 6 if settings.merge else 5
        self.done = 0

    def step(self, title: str) -> None:
        self.done += 1
        print(f"\n[{self.done}/{self.total}] {title}", flush=True)


def make_base(plan: Plan, workdir: Path, model: str | None, train_file: Path, eval_dir: Path) -> Path:
    """Step 1: the tiny model built into ``workdir/base`` (``model`` None), or the real one pulled once and reused."""
    if model is None:
        plan.step("Building a tiny LLaMA model and a tokenizer locally (nothing is downloaded)")
        base = workdir / "base"
        build_tiny_base(str(base), train_file, eval_dir)
        return base
    from dora_plugins.pull import resolve_model

    plan.step(f"Making the base model {model} available ('dora pull {model}'; once, then from the cache)")
    base = Path(resolve_model(model))
    print(f"Base model: {base}", flush=True)
    return base


def build_tiny_base(directory: str, train_file: Path, eval_dir: Path, seed: int = 0) -> None:
    """The tiny base model and a tokenizer trained on the demo's own training and evaluation text."""
    from dora_plugins.benchmarks import load_llm_adapters
    from dora_plugins.cli.demo_model import save_base_model
    from dora_plugins.cli.demo_table import COLUMNS
    from dora_plugins.prompts import eval_prompt, train_text

    records = json.loads(train_file.read_text())
    texts = [train_text(r["instruction"], r["output"], r.get("input", "")) for r in records]
    for benchmark, _, _ in COLUMNS:
        texts += [eval_prompt(item["instruction"]) for item in load_llm_adapters(eval_dir, benchmark)]
    save_base_model(directory, texts, seed=seed)


def train(base: Path, output: Path, preset: str, settings: Settings, train_file: Path) -> None:
    """``dora sft`` with a preset (the paper's r=32, alpha=64) on the bundled records, as a user would call it."""
    from trl_integration.cli import main as sft

    argv = [
        "--model_name_or_path", str(base),
        "--dataset_name", str(train_file),
        "--output_dir", str(output),
        "--preset", preset,
        "--lora_dropout", "0",  # a few hundred records, seen at most once: nothing to regularize, and faster
        # Loss on the response only: a short run learns the answer format sooner. The paper (and 'dora sft' by
        # default) trains on the whole text.
        "--train_on_inputs", "false",
        "--max_steps", str(settings.max_steps),
        "--per_device_train_batch_size", str(settings.micro_batch),
        "--gradient_accumulation_steps", str(settings.batch_size // settings.micro_batch),
        "--learning_rate", str(settings.learning_rate),
        "--lr_scheduler_type", "linear",
        "--warmup_steps", str(max(1, settings.max_steps // 20)),
        "--logging_steps", str(max(1, settings.max_steps // 5)),
        "--save_strategy", "steps",
        "--save_steps", str(max(1, settings.max_steps // settings.checkpoints)),
        "--save_only_model", "true",
        "--report_to", "none",
        "--seed", str(settings.seed),
        "--dtype", "float32",
        "--gradient_checkpointing", "false",  # memory is no problem at this size, and recomputing is slower
        "--dataloader_pin_memory", "false",
    ]  # fmt: skip
    sft(argv)


def set_base_model_path(run_dir: Path, base: Path) -> None:
    """Point the adapter and every checkpoint of ``run_dir`` at ``base``."""
    for config_file in run_dir.rglob("adapter_config.json"):
        config = json.loads(config_file.read_text())
        config["base_model_name_or_path"] = str(base)
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def merge(base: Path, workdir: Path, methods: list[tuple[str, str]]) -> dict[str, tuple[Path, None]]:
    """``dora merge`` of each adapter; the merged models replace the adapters in the scoring."""
    from dora_plugins.merge import merge_adapter

    merged = {}
    for preset, label in methods:
        merge_adapter(str(base), str(workdir / preset), str(workdir / f"{preset}-merged"), dtype="float32")
        merged[label] = (workdir / f"{preset}-merged", None)
    return merged


def evaluate(
    models: dict[str, tuple[Path, Path | None]], settings: Settings, eval_dir: Path, clock: Clock
) -> dict[str, dict]:
    """lm-eval's ``evaluate`` of each (base, adapter) on the settings' groups, the bundled items as ``data_dir``.

    The stock path of ``lm_eval --model hf --model_args pretrained=BASE,peft=ADAPTER``: ``HFLM`` loads the adapter
    with PEFT. ``lm_eval.evaluate`` rather than ``simple_evaluate``: the same scoring without the environment
    report (``pip list`` and friends in subprocesses), which took longer than scoring the quick demo's items.
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
    tasks = TaskManager(include_path=TASK_DIR, include_defaults=False, metadata={"data_dir": str(eval_dir)})
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results: dict[str, dict] = {}
    for label, (pretrained, adapter) in models.items():
        print(f"{label}:", flush=True)
        torch.manual_seed(settings.seed)
        peft = {"peft": str(adapter)} if adapter is not None else {}
        name = label.split(" (")[0]
        with clock.phase(f"load {name}"):
            lm = HFLM(pretrained=str(pretrained), dtype="float32", batch_size=settings.eval_batch_size,
                      device=device, **peft)  # fmt: skip
        results[label] = {}
        for group in settings.groups:  # one lm-eval run per group: each has its own number of items
            task_dict = get_task_dict([group], tasks)
            _set_generation(task_dict, {"num_beams": settings.num_beams})
            limit = settings.text_limit if group == OPTION_TEXT else settings.limit
            with clock.phase(f"score {name}: {'option text' if group == OPTION_TEXT else 'generation'}"):
                _merge(results[label], lm_evaluate(lm, task_dict, limit=limit))
        del lm
    return results


def _merge(into: dict, results: dict) -> None:
    """The results of two lm-eval runs of one model as one: their per-task dicts side by side."""
    for key, value in results.items():
        if isinstance(value, dict):
            into.setdefault(key, {}).update(value)
        else:
            into.setdefault(key, value)


def _set_generation(task_dict: dict, kwargs: dict) -> None:
    """Override generation settings of every generation task, as ``lm_eval --gen_kwargs`` does."""
    for task in task_dict.values():
        if isinstance(task, dict):
            _set_generation(task, kwargs)
        elif task.get_config("output_type") == "generate_until":
            task.set_config(key="generation_kwargs", value=kwargs, update=True)


def analyze(base: Path, runs: list[Path], output: Path, final: Path) -> bool:
    """``dora analyze`` of every checkpoint of ``runs`` into ``output``; False when matplotlib is missing.

    ``output`` is the work folder that becomes ``final``: the reports name checkpoints where they will be.
    """
    import dataclasses

    from dora_plugins.checkpoint_dynamics import read_checkpoint
    from dora_plugins.cli.analyze import analyze as analyze_checkpoints
    from dora_plugins.cli.analyze import base_folder, pick_figure_module, summary, write_report

    checkpoints = [read_checkpoint(path) for run in runs for path in sorted(run.glob("checkpoint-*"))]
    rows = analyze_checkpoints(base_folder(str(base)), checkpoints, [])
    rows = [dataclasses.replace(row, checkpoint=_moved(row.checkpoint, output, final)) for row in rows]
    figure_module = pick_figure_module(rows, None)
    print(summary(rows, figure_module))
    return write_report(output, rows, figure_module)


def _moved(path: str, old: Path, new: Path) -> str:
    """``path`` under ``new`` where it lies under ``old``."""
    try:
        return str(new / Path(path).relative_to(old))
    except ValueError:
        return path


def jsonable(results: dict) -> dict:
    """The parts of lm-eval's results worth keeping: scores, sample counts, and every generation."""
    keep = ("results", "groups", "n-samples", "configs", "versions", "samples")
    return {key: results[key] for key in keep if key in results}
