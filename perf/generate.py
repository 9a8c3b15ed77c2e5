"""Inference benchmark: greedy generation time per new token, in eval mode.

Candidates: PEFT LoRA, PEFT's DoRA, ours unmerged (the weight norm cached after the first step) and ours merged
into the base weights (``merge_adapter``: the base model's cost). Interleaved in one process, median of --reps.

    python -m perf.generate
"""

from __future__ import annotations

import argparse
import sys

import torch

from perf import workload

TARGET = 1.05  # ours unmerged at most 1.05x LoRA's time per token


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    workload.add_model_args(parser)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=32, help="prompt tokens")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--reps", type=int, default=5)
    return parser.parse_args(argv)


def make_generate(model, ids: torch.Tensor, new_tokens: int, beams: int = 1):
    """A closure generating exactly ``new_tokens`` tokens after ``ids``, greedy (``beams`` 1) or by beam search."""
    model.eval()
    options = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, num_beams=beams)

    def generate():
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **options)
        assert out.shape[1] == ids.shape[1] + new_tokens

    return generate


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    workload.setup(args)
    print(f"generate: {vars(args)}  torch threads={torch.get_num_threads()}")
    base = workload.build_base(args, args.prompt + args.new_tokens)
    generator = torch.Generator().manual_seed(args.seed + 2)
    ids = torch.randint(0, args.vocab, (args.batch, args.prompt), generator=generator).to(args.device)
    models = {name: workload.wrap(base, name, args) for name in workload.CANDIDATES}
    models["ours_merged"] = workload.wrap(base, "ours", args)
    models["ours_merged"].merge_adapter()
    steps = {name: make_generate(model, ids, args.new_tokens) for name, model in models.items()}
    times = workload.interleaved_medians(steps, args.reps, 1, args.device, args.clock)
    print(f"{'candidate':<14}{'ms per new token':>18}")
    for name, seconds in times.items():
        print(f"{name:<14}{seconds / args.new_tokens * 1e3:>18.2f}")
    ratio = times["ours"] / times["lora"]
    print(workload.ratio_line("ours unmerged/lora", ratio, TARGET))
    print(workload.ratio_line("ours unmerged/peft_dora", times["ours"] / times["peft_dora"], None))
    print(workload.ratio_line("ours merged/lora", times["ours_merged"] / times["lora"], None))
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
