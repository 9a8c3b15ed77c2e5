"""Training step benchmark: PEFT LoRA, PEFT DoRA and ours on one LLaMA-architecture model.

One step = forward + backward + AdamW on a batch of random tokens. Time: the candidates run in ONE process,
interleaved, and the median over --reps is reported. Memory: each candidate runs in a fresh process, and the
peak growth over --memory-steps steps is reported (resident set on CPU, allocator peak on CUDA).

    python benchmarks/train_step.py                  # dropout 0: ours vs LoRA
    python benchmarks/train_step.py --dropout 0.05   # the paper's dropout: ours vs PEFT's DoRA
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch
import workload

# Issue 3: (numerator, denominator, dropout mode) -> maximum ratio.
TIME_TARGETS = {False: ("lora", 1.05), True: ("peft_dora", 0.88)}
MEMORY_TARGETS = {False: ("lora", 1.05), True: ("peft_dora", 0.85)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    workload.add_model_args(parser)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256, help="tokens per sequence")
    parser.add_argument("--reps", type=int, default=5, help="timed steps per candidate")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per candidate first")
    parser.add_argument("--memory-steps", type=int, default=2, help="steps per fresh memory process (0 = skip)")
    parser.add_argument("--memory-of", choices=workload.CANDIDATES, help=argparse.SUPPRESS)  # child mode
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
    cmd = [sys.executable, __file__, *argv, "--memory-of", candidate]
    # A fixed mmap threshold makes glibc return every freed block above 128 KiB to the system, so the resident
    # set follows the live tensors instead of the allocator's history (its default threshold adapts upwards).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"memory run of {candidate} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_growth"]


def report(args, times: dict, memory: dict) -> bool:
    """Print the table and the ratios; return whether every target of this dropout mode is met."""
    print(f"{'candidate':<12}{'median step (s)':>18}{'peak memory growth (MiB)':>28}")
    for name in workload.CANDIDATES:
        mib = f"{memory[name] / 2**20:.1f}" if name in memory else "-"
        print(f"{name:<12}{times[name]:>18.3f}{mib:>28}")
    paper = args.dropout > 0
    met = True
    for kind, values, targets in (("time", times, TIME_TARGETS), ("memory", memory, MEMORY_TARGETS)):
        if not values:
            continue
        target_of, target = targets[paper]
        for other in ("peft_dora", "lora"):
            ratio = values["ours"] / values[other]
            print(workload.ratio_line(f"{kind} ours/{other}", ratio, target if other == target_of else None))
            met &= other != target_of or ratio <= target
    print(f"targets for dropout {args.dropout}: {'all met' if met else 'NOT all met'}")
    return met


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
        memory = {name: measure_memory(argv, name) for name in workload.CANDIDATES}
    base = workload.build_base(args, args.seq)
    ids = batch_ids(args)
    steps = {name: make_step(workload.wrap(base, name, args), ids) for name in workload.CANDIDATES}
    del base
    times = workload.interleaved_medians(steps, args.reps, args.warmup, args.device)
    return 0 if report(args, times, memory) else 1


if __name__ == "__main__":
    raise SystemExit(main())
