"""Ours against PEFT's DoRA in bf16, each measured against an fp32 reference (PEFT's DoRA on the same weights).

For each dropout (0 and the paper's 0.05, the same seed before every forward so every candidate draws the same
mask), the relative error ``max |x - ref| / max |ref|`` of the logits and of every trainable gradient, for PEFT's
DoRA in bf16 and for ours in bf16. Ours passes where its error is at most ``--tolerance`` times PEFT's own bf16
error (plus 1e-3, for tensors both get almost exactly). Writes the errors as JSON; exit status 1 if any fails.

    python -m perf.bf16_check --device cuda --workload llama7b-block --output bf16.json
    python -m perf.bf16_check --workload tiny       # the CPU smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

from perf import matrix, train_step, workload


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=matrix.WORKLOADS, default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--tolerance", type=float, default=2.0, help="ours' error over PEFT's bf16 error, at most")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def forward_backward(model, ids: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """Logits and the gradient of every trainable parameter, in fp32, after one forward + backward."""
    model.train()
    torch.manual_seed(seed)  # the same dropout masks for every candidate
    out = model(input_ids=ids, labels=ids, use_cache=False)
    out.loss.backward()
    values = {"logits": out.logits.detach().float()}
    for name, param in model.named_parameters():
        if param.requires_grad:
            values[name.replace(".default", "")] = param.grad.detach().float()
    model.zero_grad(set_to_none=True)
    return values


def relative_errors(values: dict, reference: dict) -> dict[str, float]:
    """``max |x - ref| / max |ref|`` per tensor."""
    return {k: ((values[k] - r).abs().max() / r.abs().max().clamp_min(1e-30)).item() for k, r in reference.items()}


def check(args: argparse.Namespace, dropout: float) -> dict:
    """Errors of PEFT's DoRA and ours in bf16 against PEFT's DoRA in fp32, per tensor."""
    options = {"device": args.device, "dtype": "float32", "seed": args.seed, "threads": 0, "clock": "wall"}
    matrix_args = argparse.Namespace(**options, bits=None)
    base, shape = matrix.build_base(matrix_args, args.workload)
    settings = argparse.Namespace(**{**vars(shape), "dropout": dropout, "batch": args.batch, "seq": args.seq})
    ids = train_step.batch_ids(argparse.Namespace(**{**vars(settings), "vocab": base.config.vocab_size}))
    reference = forward_backward(workload.wrap(base, "peft_dora", settings), ids, args.seed)
    base_bf16 = copy.deepcopy(base).to(torch.bfloat16)
    del base
    errors = {}
    for candidate in ("peft_dora", "ours"):
        model = workload.wrap(base_bf16, candidate, settings)
        errors[candidate] = relative_errors(forward_backward(model, ids, args.seed), reference)
        del model
    failed = [
        k for k, peft in errors["peft_dora"].items() if errors["ours"][k] > args.tolerance * peft + 1e-3
    ]  # fmt: skip
    return {"dropout": dropout, "errors": errors, "failed": failed}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    workload.setup(argparse.Namespace(threads=0, clock="wall", device=args.device, seed=args.seed))
    results = [check(args, dropout) for dropout in (0.0, matrix.PAPER_DROPOUT)]
    for result in results:
        errors = result["errors"]
        worst = {c: max(errors[c].values()) for c in errors}
        status = "ok" if not result["failed"] else "FAILED: " + ", ".join(result["failed"])
        print(
            f"dropout {result['dropout']}: largest relative error vs fp32: peft_dora {worst['peft_dora']:.2e},"
            f" ours {worst['ours']:.2e}; logits peft_dora {errors['peft_dora']['logits']:.2e},"
            f" ours {errors['ours']['logits']:.2e}: {status}"
        )
    if args.output:
        args.output.write_text(json.dumps({"workload": args.workload, "device": args.device, "results": results}))
    return 0 if all(not result["failed"] for result in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
