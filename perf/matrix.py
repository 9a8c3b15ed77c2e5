"""The performance matrix: every workload x dropout mode x eager/compiled, training steps and generation, with
LoRA, PEFT's DoRA and ours run interleaved in one process; time and memory ratios with their spread.

Workloads (:data:`WORKLOADS`): random LLaMAs built from a config, the LLaMA-7B layer set (one block: 4096 x 4096
attention, 4096 x 11008 MLP) and SmolLM2-135M with its real weights (``dora pull smollm2-135m``). Dropout modes:
``dropout0``; ``paper`` (0.05 on both paths, as the paper and PEFT); ``lora_branch`` (ours with
``dropout_mode="lora_branch"`` at 0.05, against the same LoRA and PEFT DoRA steps). A training step is forward +
backward + AdamW (:func:`perf.train_step.make_step`). Generation, eval mode, greedy and with 4 beams, time per new
token: kind ``lm_eval`` runs lm-eval's own ``HFLM.generate_until`` on the candidates
(:mod:`perf.lm_eval_generate`): the ``dora_piqa`` requests of --lm-eval-items items in one call, as an lm-eval run
passes a task's requests, each answer forced to --lm-eval-tokens tokens, and counts the answers of ours that
differ from PEFT's DoRA's; kind ``generate`` is one ``model.generate`` call on one short prompt
(:func:`perf.generate.make_generate`), exactly --new-tokens tokens, where the norm computed once per call is
the floor.

Spread: each of --repetitions repetitions times every candidate --steps times, interleaved (who goes first
rotates), and takes the median; a ratio is computed per repetition, and the table shows the median ratio with
the lowest and highest. Memory: ``saved``, the activations autograd holds at the end of the forward
(:func:`perf.profile_step.saved_activations`, exact and noise-free); ``peak``, the peak growth over two steps,
each candidate in a fresh process on the CPU (:func:`perf.train_step.measure_memory`), the allocator's peak
on CUDA.

    python -m perf.matrix --quick                                  # CI: one repetition of the tiny workload
    python -m perf.matrix --output new.json --compare old.json     # the ratio changes between two commits
    python -m perf.matrix --workloads smollm2-135m --no-compile
    python -m perf.matrix --render new.json --markdown docs/performance.md   # regenerate the page's tables
    python -m perf.matrix --render a.json b.json --compare old_a.json old_b.json   # runs made in parts, merged
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from perf import generate, matrix_report, profile_step, train_step, workload


@dataclasses.dataclass(frozen=True)
class Workload:
    hidden: int = 1024
    layers: int = 2
    vocab: int = 512
    batch: int = 4
    seq: int = 256
    rank: int = 32
    model: str | None = None  # a real model (`dora pull` name)
    prompt: int = 16  # model.generate: prompt tokens and new tokens, batch 1
    new_tokens: int = 16
    lm_eval_items: int = 4  # lm-eval's generate_until: dora_piqa items in the one call, each answer's new tokens
    lm_eval_tokens: int = 16  # (the dora tasks allow 32; their answers end at EOS after about 8 to 12)


WORKLOADS = {
    "tiny": Workload(
        hidden=64,
        layers=1,
        vocab=512,
        batch=2,
        seq=8,
        rank=4,
        prompt=4,
        new_tokens=3,
        lm_eval_items=2,
        lm_eval_tokens=3,
    ),
    "h1024-l2": Workload(),
    "h1024-l8": Workload(layers=8, vocab=4096),
    "smollm2-135m": Workload(model="smollm2-135m", batch=4, seq=128),
    "llama7b-block": Workload(hidden=4096, layers=1, batch=1, seq=128, new_tokens=8),
    "llama3-8b-block": Workload(hidden=4096, layers=1, vocab=512, batch=1, seq=128, new_tokens=8),
}
# LLaMA3-8B's block: MLP 14336, 32 heads of 128, 8 key-value heads (k, v: 4096 x 1024); the builder has LLaMA-7B's
LLAMA3_8B = {"intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128}
DEFAULT_WORKLOADS = ["h1024-l2", "h1024-l8", "smollm2-135m", "llama7b-block"]
PAPER_DROPOUT = 0.05
# mode -> (dropout, the candidate standing for ours in that mode)
MODES = {"dropout0": (0.0, "ours"), "paper": (PAPER_DROPOUT, "ours"), "lora_branch": (PAPER_DROPOUT, "ours_branch")}
GENERATION = {"greedy": 1, "beams4": 4}
LM_EVAL_POSITIONS = 2048  # what lm-eval may pass (perf.lm_eval_generate.MAX_LENGTH), so no context is cut
GENERATION_KINDS = ("lm_eval", "generate")  # lm-eval's generate_until (the target), model.generate (the floor)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, help=f"default: {' '.join(DEFAULT_WORKLOADS)}")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--repetitions", type=int, default=3, help="repetitions: the spread is over these")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per candidate in a repetition (median)")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="eager steps only")
    parser.add_argument("--compiled-only", action="store_true", help="compiled steps only (a GPU's time budget)")
    parser.add_argument("--batch", type=int, help="sequences per training step, for every workload")
    parser.add_argument("--seq", type=int, help="tokens per sequence, for every workload")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile's backend (eager: quick)")
    parser.add_argument("--no-generate", dest="generate", action="store_false", help="training steps only")
    parser.add_argument(
        "--generation", nargs="+", choices=GENERATION_KINDS, default=list(GENERATION_KINDS), help="generation kinds"
    )
    parser.add_argument("--lm-eval-items", type=int, help="dora_piqa items per generate_until call (every workload)")
    parser.add_argument("--lm-eval-tokens", type=int, help="new tokens per lm-eval answer (every workload)")
    parser.add_argument(
        "--peft-dora-calls", type=int, default=1, help="lm_eval rows: timed generate_until calls of PEFT's DoRA"
    )
    parser.add_argument("--no-train", dest="train", action="store_false", help="generation only")
    parser.add_argument("--no-peak-memory", dest="peak_memory", action="store_false", help="saved activations only")
    parser.add_argument("--quick", action="store_true", help="CI: the tiny workload, one repetition of one step")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--clock", choices=workload.CLOCKS, help="default: cpu on the CPU, cuda (events) on CUDA")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="write the results as JSON")
    parser.add_argument(
        "--compare", type=Path, nargs="+", help="the JSON of an earlier run (or its parts): print the ratio changes"
    )
    parser.add_argument(
        "--render", type=Path, nargs="+", help="measure nothing: print (and --markdown) this JSON, or its parts"
    )
    parser.add_argument("--markdown", type=Path, help="rewrite the generated section of this Markdown page")
    parser.add_argument(
        "--mixed-commits", action="store_true", help="--render/--compare: merge parts measured at different commits"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.workloads = args.workloads or ["tiny"]
        args.repetitions, args.steps = 1, 1
        args.peak_memory = False
        if args.compile_backend == "inductor":
            args.compile_backend = "eager"
    if args.peft_dora_calls < 1:
        parser.error("--peft-dora-calls must be at least 1: its answers are what ours are checked against")
    args.workloads = args.workloads or DEFAULT_WORKLOADS
    args.clock = args.clock or ("cuda" if args.device.startswith("cuda") else "cpu")
    args.bits = None
    return args


def settings(args: argparse.Namespace, name: str, dropout: float = 0.0) -> argparse.Namespace:
    """The namespace perf's shared builders take, for one workload at one dropout."""
    shape = WORKLOADS[name]
    sizes = {
        key: getattr(args, key)
        for key in ("batch", "seq", "lm_eval_items", "lm_eval_tokens")
        if getattr(args, key, None)
    }
    values = {**vars(args), **dataclasses.asdict(shape), **sizes, "dropout": dropout, "model": shape.model}
    return argparse.Namespace(**values)


def build_base(args: argparse.Namespace, name: str):
    """The workload's base model: workload.build_base, with LLaMA3-8B's MLP and GQA for that block."""
    base_args = settings(args, name)
    positions = max(base_args.seq, base_args.prompt + base_args.new_tokens, LM_EVAL_POSITIONS)
    base = workload.build_base(base_args, positions)
    if name == "llama3-8b-block":
        from transformers import LlamaForCausalLM

        config = base.config
        for key, value in LLAMA3_8B.items():
            setattr(config, key, value)
        torch.manual_seed(args.seed)
        base = LlamaForCausalLM(config).to(args.device, getattr(torch, args.dtype)).eval()
    return base, base_args


def timed_groups(steps: dict, args: argparse.Namespace) -> dict[str, list[float]]:
    """Per candidate, the median step time of each repetition (candidates interleaved within each)."""
    per_rep: dict = {name: [] for name in steps}
    for rep in range(args.repetitions):
        medians = workload.interleaved_medians(steps, args.steps, 1 if rep == 0 else 0, args.device, args.clock)
        for name, value in medians.items():
            per_rep[name].append(value)
    return per_rep


def train_rows(args: argparse.Namespace, name: str, base, dropout: float, compiled: bool) -> list[dict]:
    """The rows of every mode at ``dropout``: times per repetition and, eager, the memory per candidate."""
    modes = [mode for mode in args.modes if MODES[mode][0] == dropout]
    candidates = ["lora", "peft_dora", *dict.fromkeys(MODES[mode][1] for mode in modes)]
    run_args = settings(args, name, dropout)
    ids = train_step.batch_ids(argparse.Namespace(**{**vars(run_args), "vocab": base.config.vocab_size}))
    models = {}
    for candidate in candidates:
        try:
            models[candidate] = workload.wrap(base, candidate, run_args)
        except TypeError as error:  # an older commit's DoraConfig may lack dropout_mode
            print(f"skipping {candidate}: {error}", file=sys.stderr)
    modes = [mode for mode in modes if MODES[mode][1] in models]
    memory: dict[str, dict] = {}
    if not compiled:
        memory["saved"] = {c: profile_step.saved_activations(m.train(), ids) for c, m in models.items()}
        if args.peak_memory:
            memory["peak"] = {c: peak_memory(args, name, dropout, c, models[c], ids) for c in models}
    steps = {}
    for candidate, model in models.items():
        runnable = torch.compile(model, backend=args.compile_backend) if compiled else model
        steps[candidate] = train_step.make_step(runnable, ids)
    compile_s = {c: workload.timed(step, args.device) for c, step in steps.items()} if compiled else {}
    candidates = list(models)
    seconds = timed_groups(steps, args)
    rows = []
    for mode in modes:
        ours = MODES[mode][1]
        keep = ["lora", "peft_dora", ours]
        rows.append(
            {
                "workload": name,
                "kind": "train",
                "mode": mode,
                "compiled": compiled,
                "dtype": args.dtype,
                "seconds": {c.replace(ours, "ours"): seconds[c] for c in keep},
                "compile_seconds": {c.replace(ours, "ours"): compile_s[c] for c in keep if c in compile_s},
                "memory_mib": {k: {c.replace(ours, "ours"): v[c] for c in keep} for k, v in memory.items()},
            }
        )
    del models, steps
    workload.release_freed_memory()
    return rows


def peak_memory(args: argparse.Namespace, name: str, dropout: float, candidate: str, model, ids) -> float:
    """MiB of peak growth over two steps: the CUDA allocator's here, on the CPU a fresh process's resident set."""
    if args.device.startswith("cuda"):
        step = train_step.make_step(model, ids)
        step()
        with workload.PeakMemory(args.device) as peak:
            step()
            step()
        return peak.growth / 2**20
    shape = WORKLOADS[name]
    if name == "llama3-8b-block":
        return float("nan")  # the child builds from train_step's options, which have no LLaMA3 block
    model_args = ["--model", shape.model] if shape.model else ["--hidden", str(shape.hidden)]
    model_args += ["--layers", str(shape.layers), "--vocab", str(shape.vocab)] if not shape.model else []
    argv = [*model_args, "--rank", str(shape.rank), "--batch", str(shape.batch), "--seq", str(shape.seq)]
    argv += ["--dropout", str(dropout), "--threads", str(args.threads), "--dtype", args.dtype, "--memory-steps", "2"]
    try:
        return train_step.measure_memory(argv, candidate) / 2**20
    except (RuntimeError, subprocess.SubprocessError) as error:  # an older commit may lack a candidate
        print(f"peak memory of {candidate} on {name}: {error}".splitlines()[0], file=sys.stderr)
        return float("nan")


def generation_rows(args: argparse.Namespace, name: str, base) -> list[dict]:
    """Greedy and 4-beam generation, eval mode, the three candidates interleaved."""
    run_args = settings(args, name)
    generator = torch.Generator().manual_seed(args.seed + 2)
    ids = torch.randint(0, base.config.vocab_size, (1, run_args.prompt), generator=generator).to(args.device)
    models = {c: workload.wrap(base, c, run_args) for c in workload.CANDIDATES}
    steps = {
        (c, mode): generate.make_generate(m, ids, run_args.new_tokens, beams)
        for mode, beams in GENERATION.items()
        for c, m in models.items()
    }
    seconds = timed_groups(steps, args)
    per_token = {key: [s / run_args.new_tokens for s in values] for key, values in seconds.items()}
    rows = [
        {
            "workload": name,
            "kind": "generate",
            "mode": mode,
            "compiled": False,
            "dtype": args.dtype,
            "seconds": {c: per_token[c, mode] for c in workload.CANDIDATES},
            "compile_seconds": {},
            "memory_mib": {},
        }
        for mode in GENERATION
    ]
    del models, steps
    workload.release_freed_memory()
    return rows


def lm_eval_timed(steps: dict, args: argparse.Namespace) -> dict[tuple[str, str], list[float]]:
    """Seconds per call and repetition: LoRA and ours as :func:`timed_groups`; PEFT's DoRA, 10 to 40 times slower,
    runs --peft-dora-calls timed calls (the first repetitions), without a warm-up call."""
    per_rep: dict = {key: [] for key in steps}
    for rep in range(args.repetitions):
        active = {k: v for k, v in steps.items() if k[0] != "peft_dora" or rep < args.peft_dora_calls}
        if rep == 0:  # one untimed warm-up call of LoRA and ours
            for key, step in active.items():
                if key[0] != "peft_dora":
                    step()
        medians = workload.interleaved_medians(active, args.steps, 0, args.device, args.clock)
        for key, value in medians.items():
            per_rep[key].append(value)
    return per_rep


def lm_eval_rows(args: argparse.Namespace, name: str, base) -> list[dict]:
    """Greedy and 4-beam generation through lm-eval's ``HFLM.generate_until``, the three candidates interleaved."""
    from perf import lm_eval_generate

    run_args = settings(args, name)
    shape = WORKLOADS[name]
    folder = workload._model_folder(shape.model) if shape.model else None
    tokenizer = lm_eval_generate.tokenizer(base.config.vocab_size, folder)
    instances = lm_eval_generate.requests(run_args.lm_eval_items)
    models = {c: workload.wrap(base, c, run_args) for c in workload.CANDIDATES}
    workload.check_layers(models)
    lms = {c: lm_eval_generate.wrap(model, tokenizer) for c, model in models.items()}
    answers: dict = {}
    steps = {
        (c, mode): lm_eval_generate.make_generate_until(
            lm, instances, beams, run_args.lm_eval_tokens, answers, (c, mode)
        )
        for mode, beams in GENERATION.items()
        for c, lm in lms.items()
    }
    seconds = lm_eval_timed(steps, args)
    tokens = len(instances) * run_args.lm_eval_tokens
    rows = []
    for mode in GENERATION:
        differ = lm_eval_generate.differing(answers["ours", mode], answers["peft_dora", mode])
        row = {
            "workload": name,
            "kind": "lm_eval",
            "mode": mode,
            "compiled": False,
            "dtype": args.dtype,
            "seconds": {c: [s / tokens for s in seconds[c, mode]] for c in workload.CANDIDATES},
            "compile_seconds": {},
            "memory_mib": {},
            "answers": {"differ": differ, "of": len(instances), "tokens": run_args.lm_eval_tokens},
        }
        rows += _progress([row])
    del models, lms, steps
    workload.release_freed_memory()
    return rows


def measure(args: argparse.Namespace) -> dict:
    """Every row of the matrix, workload by workload (one base model in memory at a time)."""
    rows = []
    dropouts = list(dict.fromkeys(MODES[mode][0] for mode in args.modes))
    for name in args.workloads:
        base, _ = build_base(args, name)
        for compiled in (True,) if args.compiled_only else (False, True) if args.compile else (False,):
            for dropout in dropouts if args.train else []:
                new = train_rows(args, name, base, dropout, compiled)
                rows += _progress(new)
        if args.generate and "lm_eval" in args.generation:
            rows += lm_eval_rows(args, name, base)
        if args.generate and "generate" in args.generation:
            rows += _progress(generation_rows(args, name, base))
        del base
        workload.release_freed_memory()
        if args.output:  # what is done so far survives a run stopped later
            args.output.write_text(json.dumps({"meta": matrix_report.meta(args), "rows": rows}, indent=1) + "\n")
    return {"meta": matrix_report.meta(args), "rows": rows}


def _progress(rows: list[dict]) -> list[dict]:
    for row in rows:
        print(matrix_report.progress(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.render:
        results = matrix_report.merge([json.loads(path.read_text()) for path in args.render], args.mixed_commits)
    else:
        workload.setup(args)
        print(f"matrix: {' '.join(args.workloads)}; modes {' '.join(args.modes)}; {args.clock} clock", flush=True)
        results = measure(args)
    print(matrix_report.table(results))
    if args.output:
        args.output.write_text(json.dumps(results, indent=1) + "\n")
    old = [json.loads(path.read_text()) for path in args.compare or []]
    old = matrix_report.merge(old, args.mixed_commits) if old else None
    if old:
        print(matrix_report.compare(old, results))
    if args.markdown:
        matrix_report.write_markdown(args.markdown, results, old)
    return 0


def ratio_spread(values: list[float]) -> tuple[float, float, float]:
    """(median, lowest, highest)."""
    return statistics.median(values), min(values), max(values)


if __name__ == "__main__":
    # Training rows fix glibc's mmap threshold: with its adaptive default the model copies they free stay resident
    # (SmolLM2's training rows grew a run past 13 GB, and two side by side met the OOM killer). Generation rows alone
    # (--no-train) keep the default, as a user's process has it: with the threshold fixed at 128 KiB every larger
    # allocation is a fresh zeroed mapping, and SmolLM2's page faults per forward then depended on allocation order.
    options = parse_args(sys.argv[1:])
    if options.train and not options.render and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        os.environ["MALLOC_MMAP_THRESHOLD_"] = "131072"
        os.execv(sys.executable, [sys.executable, "-m", "perf.matrix", *sys.argv[1:]])
    raise SystemExit(main())
