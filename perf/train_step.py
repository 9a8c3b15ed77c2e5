"""Training step benchmark: PEFT LoRA, PEFT DoRA and ours on one LLaMA-architecture model.

One step = forward + backward + AdamW on a batch of random tokens. Time: the candidates run in ONE process,
interleaved, and the median over --reps is reported. Memory: each candidate runs in a fresh process, and the
peak growth over --memory-steps steps is reported (resident set on CPU, allocator peak on CUDA).

``--compile`` also runs every candidate's model under ``torch.compile`` (inductor), as
``TrainingArguments(torch_compile=True)`` does, interleaved with the eager ones; the first compiled step
(compilation) is timed apart and never counts. ``--candidates`` adds ``ours_branch``: our layer with
``dropout_mode="lora_branch"`` (dropout on the LoRA branch only, as torchtune does).

    python -m perf.train_step                  # dropout 0: ours vs LoRA
    python -m perf.train_step --dropout 0.05   # the paper's dropout: ours vs PEFT's DoRA
    python -m perf.train_step --hidden 512 --layers 4 --vocab 4096 --seq 128 --compile --memory-steps 0
    python -m perf.train_step --layers 8 --vocab 4096 --dropout 0.05 --candidates lora peft_dora ours ours_branch
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from perf import workload

# (kind, paper dropout) -> {(numerator, denominator): maximum ratio}: the targets for eager and compiled steps.
TARGETS = {
    ("time", False): {("ours", "lora"): 1.05},
    ("time", True): {("ours", "peft_dora"): 0.88},
    ("memory", False): {("ours", "lora"): 1.05},
    ("memory", True): {("ours", "peft_dora"): 0.85},
    ("compiled time", False): {("ours", "lora"): 1.10},
    ("compiled time", True): {("ours", "peft_dora"): 0.85},
}
PAIRS = (("ours", "peft_dora"), ("ours", "lora"), ("ours_branch", "ours"), ("ours_branch", "lora"))
COMPILED_VS_EAGER = 1.0  # compiling never makes our step slower


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    workload.add_model_args(parser)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256, help="tokens per sequence")
    parser.add_argument("--reps", type=int, default=5, help="timed steps per candidate")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per candidate first")
    parser.add_argument("--memory-steps", type=int, default=2, help="steps per fresh memory process (0 = skip)")
    parser.add_argument("--candidates", nargs="+", choices=workload.ALL_CANDIDATES, default=list(workload.CANDIDATES))
    parser.add_argument("--compile", action="store_true", help="also time each candidate under torch.compile")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile's backend (eager: a quick check)")
    parser.add_argument("--memory-of", choices=workload.ALL_CANDIDATES, help=argparse.SUPPRESS)  # child mode
    return parser.parse_args(argv)


def make_step(model, ids: torch.Tensor):
    """A closure running one training step of ``model`` on ``ids``."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss  # a KV cache is for generation
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def batch_ids(args: argparse.Namespace) -> torch.Tensor:
    generator = torch.Generator().manual_seed(args.seed + 2)
    return torch.randint(0, args.vocab, (args.batch, args.seq), generator=generator).to(args.device)


def memory_child(args: argparse.Namespace) -> None:
    """Child process: build one candidate, run --memory-steps steps, print the peak growth in bytes."""
    model = workload.wrap(workload.build_base(args, args.seq), args.memory_of, args)
    step = make_step(model, batch_ids(args))
    with workload.PeakMemory(args.device) as peak:
        for _ in range(args.memory_steps):
            step()
    print(json.dumps({"peak_growth": peak.growth}))


def measure_memory(argv: list[str], candidate: str) -> int:
    """Peak memory growth of ``candidate``, measured in a fresh Python process."""
    cmd = [sys.executable, "-m", "perf.train_step", *argv, "--memory-of", candidate]
    # A fixed mmap threshold makes glibc return every freed block above 128 KiB to the system, so the resident
    # set follows the live tensors instead of the allocator's history (its default threshold adapts upwards).
    root = str(Path(__file__).resolve().parents[1])  # where the perf package lies, wherever this runs from
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), root) if p)  # a caller's path goes first
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "PYTHONPATH": path}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"memory run of {candidate} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_growth"]


def report(args, times: dict, compile_s: dict, memory: dict) -> bool:
    """Print the table and the ratios; return whether every target of this dropout mode is met."""
    print(f"times: median of {args.reps} interleaved steps, {args.clock} clock; compiling: the first compiled step")
    print(f"{'candidate':<12}{'median step (s)':>18}{'compiled (s)':>14}{'compiling (s)':>15}{'memory (MiB)':>14}")
    for name in args.candidates:
        mib = memory[name] / 2**20 if name in memory else None
        row = (times[name, False], times.get((name, True)), compile_s.get(name))
        print(f"{name:<12}{_cell(row[0]):>18}{_cell(row[1]):>14}{_cell(row[2]):>15}{_cell(mib, 1):>14}")
    paper = args.dropout > 0
    eager = {name: times[name, False] for name in args.candidates}
    compiled = {name: times[name, True] for name in args.candidates if (name, True) in times}
    met = True
    for kind, values in (("time", eager), ("memory", memory), ("compiled time", compiled)):
        for pair in PAIRS:
            if all(name in values for name in pair):
                target = TARGETS[kind, paper].get(pair)
                ratio = values[pair[0]] / values[pair[1]]
                print(workload.ratio_line(f"{kind} {pair[0]}/{pair[1]}", ratio, target))
                met &= target is None or ratio <= target
    for name in compiled:
        target = COMPILED_VS_EAGER if name == "ours" else None
        print(workload.ratio_line(f"compiled/eager {name}", compiled[name] / eager[name], target))
        met &= target is None or compiled[name] <= eager[name] * target
    print(f"targets for dropout {args.dropout}: {'all met' if met else 'NOT all met'}")
    return met


def _cell(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def timed_steps(args: argparse.Namespace) -> tuple[dict, dict]:
    """Median step time per (candidate, compiled), interleaved; and the first compiled step's time (compiling)."""
    base = workload.build_base(args, args.seq)
    ids = batch_ids(args)
    steps = {}
    for name in args.candidates:
        steps[name, False] = make_step(workload.wrap(base, name, args), ids)
        if args.compile:
            steps[name, True] = make_step(
                torch.compile(workload.wrap(base, name, args), backend=args.compile_backend), ids
            )
    del base
    compile_s = {name: workload.timed(steps[name, True], args.device) for name in args.candidates if args.compile}
    return workload.interleaved_medians(steps, args.reps, args.warmup, args.device, args.clock), compile_s


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    workload.setup(args)
    if args.memory_of:
        memory_child(args)
        return 0
    print(f"workload: {vars(args)}  torch threads={torch.get_num_threads()}")
    memory = {}
    if args.memory_steps:
        memory = {name: measure_memory(argv, name) for name in args.candidates}
    times, compile_s = timed_steps(args)
    return 0 if report(args, times, compile_s, memory) else 1


if __name__ == "__main__":
    raise SystemExit(main())
