"""Time per new token of lm-eval's own generate path: what ``lm_eval --model hf --model_args
pretrained=BASE,peft=ADAPTER`` costs with a LoRA adapter, with a DoRA adapter on PEFT's layer, and on ours.

A random LLaMA and a tokenizer are built locally (as in ``eval_batch.py``), and two adapters with the same
factors are saved: LoRA and DoRA (``LoraConfig(use_dora=True)``), B made non-zero. lm-eval's
``HFLM(pretrained=..., peft=...)`` loads each as the stock command does, and its ``generate_until`` answers the
``dora_piqa`` requests of the items shipped with the package, greedy and with 4 beams (the paper's protocol).
Candidates: ``lora``; ``peft_dora``, the DoRA adapter with routing off (PEFT's own layer); ``ours``, the same
adapter with routing on (what lm-eval runs once dora-plugins is installed). They run in one process,
interleaved, median of --reps. Every answer is forced to --new-tokens tokens (``min_new_tokens``), so the time
per new token is the call's time over items x new tokens, the prompt's forward included. Also prints how many
answers of ours differ from PEFT's DoRA (they must not). Exit status 1 if ours exceeds the target or differs.

    python -m perf.lm_eval_generate
    python -m perf.lm_eval_generate --hidden 1024 --layers 8 --items 16
    python -m perf.lm_eval_generate --model smollm2-135m     # SmolLM2-135M's real weights and tokenizer
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
from pathlib import Path

import torch

from perf import eval_batch, workload

TARGET = 1.05  # ours at most 1.05x LoRA's time per token, through lm-eval
CANDIDATES = {"lora": ("lora", False), "peft_dora": ("dora", False), "ours": ("dora", True)}  # adapter, routed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a real model (a `dora pull` name such as smollm2-135m, or a folder)")
    parser.add_argument("--hidden", type=int, default=512, help="hidden size (heads of 64)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--rank", type=int, default=32, help="adapter rank r (lora_alpha = 2r)")
    parser.add_argument("--items", type=int, default=8, help="dora_piqa items (at most 40)")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 4], help="num_beams settings (1 = greedy)")
    parser.add_argument("--batch-size", default="1", help="lm-eval's batch size (the paper's script used 1)")
    parser.add_argument("--reps", type=int, default=3, help="timed runs per candidate and setting, interleaved")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    workload.add_clock_arg(parser)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def save_adapters(model_dir: Path, args: argparse.Namespace, folder: Path) -> dict[str, Path]:
    """A LoRA and a DoRA adapter with the same factors, saved in ``folder`` (PEFT's own layers build them)."""
    from transformers import AutoModelForCausalLM

    from dora_plugins import route_peft

    route_peft(False)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    settings = argparse.Namespace(rank=args.rank, dropout=0.0, seed=args.seed)
    folders = {}
    for adapter, candidate in (("lora", "lora"), ("dora", "peft_dora")):
        folders[adapter] = folder / f"adapter-{adapter}"
        workload.wrap(base, candidate, settings).save_pretrained(folders[adapter])
    return folders


def load(model_dir: Path, adapter: Path, routed: bool, batch_size: str):
    """lm-eval's HF model with ``peft=adapter``, loaded with routing on or off; checks which layer runs DoRA."""
    from lm_eval.models.huggingface import HFLM

    from dora_plugins import route_peft
    from dora_plugins.peft_layer import DoraLinear

    route_peft(routed)
    lm = HFLM(pretrained=str(model_dir), peft=str(adapter), dtype="float32", device="cpu", batch_size=batch_size)
    dora_layers = [m for m in lm.model.modules() if hasattr(m, "lora_magnitude_vector") and m.lora_magnitude_vector]
    if dora_layers and any(isinstance(m, DoraLinear) != routed for m in dora_layers):
        raise SystemExit(f"routing {'on' if routed else 'off'} did not load the expected DoRA layer")
    return lm


def forced_length(instances: list, beams: int, new_tokens: int) -> list:
    """The requests with the task's generation settings, but ``beams`` beams and exactly ``new_tokens`` tokens."""
    forced = []
    for instance in instances:
        context, gen_kwargs = instance.args
        gen_kwargs = {**gen_kwargs, "num_beams": beams, "max_gen_toks": new_tokens, "min_new_tokens": new_tokens}
        forced.append(dataclasses.replace(instance, arguments=(context, gen_kwargs)))
    return forced


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    logging.getLogger("dora_plugins").setLevel(logging.WARNING)
    print(f"lm_eval_generate: {vars(args)}  torch threads={torch.get_num_threads()}")
    with tempfile.TemporaryDirectory(prefix="lm-eval-generate-") as folder:
        if args.model:
            from dora_plugins.pull import resolve_model

            model_dir = Path(resolve_model(args.model))
        else:
            model_dir = Path(folder)
            eval_batch.build_model(model_dir, args.hidden, args.layers)
        adapters = save_adapters(model_dir, args, Path(folder))
        models = {name: load(model_dir, adapters[adapter], routed, args.batch_size)
                  for name, (adapter, routed) in CANDIDATES.items()}  # fmt: skip
        times, answers = timed_generations(models, args)
    return 0 if report(args, times, answers) else 1


def timed_generations(models: dict, args: argparse.Namespace) -> tuple[dict, dict]:
    """Median seconds of ``generate_until`` and its answers, per (candidate, beams), interleaved."""
    requests = eval_batch.requests(args.items, "dora_piqa")
    answers: dict[tuple[str, int], list[str]] = {}

    def step_of(name: str, beams: int):
        forced = forced_length(requests, beams, args.new_tokens)

        def step():
            answers[name, beams] = models[name].generate_until(forced, disable_tqdm=True)

        return step

    steps = {(name, beams): step_of(name, beams) for beams in args.beams for name in models}
    return workload.interleaved_medians(steps, args.reps, 1, "cpu", args.clock), answers


def report(args: argparse.Namespace, times: dict, answers: dict) -> bool:
    """Print ms per new token and the ratios per beam setting; return whether ours met the target everywhere."""
    tokens = args.items * args.new_tokens
    print(f"{'beams':<7}" + "".join(f"{name + ' ms/token':>20}" for name in CANDIDATES))
    for beams in args.beams:
        print(f"{beams:<7}" + "".join(f"{times[name, beams] / tokens * 1e3:>20.2f}" for name in CANDIDATES))
    met = True
    for beams in args.beams:
        lora, peft_dora, ours = (times[name, beams] for name in ("lora", "peft_dora", "ours"))
        ratio = ours / lora
        print(workload.ratio_line(f"beams {beams}: ours/lora", ratio, TARGET))
        print(workload.ratio_line(f"beams {beams}: peft_dora/lora", peft_dora / lora, None))
        print(workload.ratio_line(f"beams {beams}: ours/peft_dora", ours / peft_dora, None))
        differ = sum(a != b for a, b in zip(answers["ours", beams], answers["peft_dora", beams], strict=True))
        print(f"beams {beams}: answers of ours that differ from peft_dora's: {differ} of {args.items}")
        met &= ratio <= TARGET and differ == 0
    return met


if __name__ == "__main__":
    raise SystemExit(main())
