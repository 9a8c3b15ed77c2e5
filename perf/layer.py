"""Single-layer micro benchmark: one adapted linear layer (default 4096 x 4096, 2048 tokens).

Reports, per candidate, the median time of forward + backward (input and adapter gradients), and the time of
the weight norm alone: PEFT's path (``get_lora_weight`` builds an in x in identity and the out x in matrix,
then ``get_weight_norm``) against ours (``dora.weight_norm``: the same norm, computed block of rows by block).

``ours_floor`` is ours with the row norm handed in rather than computed: what our layer would cost if the norm
were free, so ``ours - ours_floor`` is the norm's share (a product of r x in x out) that no cache-free layer avoids.

    python -m perf.layer
    python -m perf.layer --dropout 0.05
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

from dora_plugins import dora
from perf import workload

NORM_TARGET = 3.0  # ours at least 3x faster than PEFT's norm


class OneLinear(nn.Module):
    def __init__(self, features_in: int, features_out: int):
        super().__init__()
        self.proj = nn.Linear(features_in, features_out, bias=False)

    def forward(self, x):
        return self.proj(x)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=4096, help="in and out features of the linear layer")
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=0)
    workload.add_clock_arg(parser)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> dict:
    """The three candidates around copies of one random linear layer, in train mode."""
    torch.manual_seed(args.seed)
    base = OneLinear(args.features, args.features).to(args.device, getattr(torch, args.dtype))
    return {name: workload.wrap(base, name, args, ["proj"], task_type=None).train() for name in workload.CANDIDATES}


def fwd_bwd_steps(models: dict, args: argparse.Namespace) -> dict:
    dtype = getattr(torch, args.dtype)
    x = torch.randn(args.tokens, args.features, device=args.device, dtype=dtype, requires_grad=True)
    grad_out = torch.randn(args.tokens, args.features, device=args.device, dtype=dtype)

    def step_of(model):
        def step():
            model(x).backward(grad_out)
            x.grad = None
            model.zero_grad(set_to_none=True)

        return step

    steps = {name: step_of(model) for name, model in models.items()}
    steps["ours_floor"] = given_norm(steps["ours"], models["ours"].base_model.model.proj)
    return steps


def given_norm(step, proj):
    """``step`` with the row norm handed in instead of computed: our layer's floor without caching the norm."""
    weight, lora_A, lora_B = proj.get_base_layer().weight, proj.lora_A["default"].weight, proj.lora_B["default"].weight
    norm = dora.weight_norm(weight, lora_A, lora_B, proj.scaling["default"])
    computed = dora.weight_norm

    def floor_step():
        dora.weight_norm = lambda *args, **kwargs: norm
        try:
            step()
        finally:
            dora.weight_norm = computed

    return floor_step


def norm_steps(models: dict) -> dict:
    """The norm as each DoRA computes it in a training forward (grad mode on, norm detached)."""
    peft_layer = models["peft_dora"].base_model.model.proj
    ours_layer = models["ours"].base_model.model.proj

    def peft_norm():
        dora = peft_layer.lora_magnitude_vector["default"]
        lora_weight = dora.get_lora_weight(lora_A=peft_layer.lora_A["default"], lora_B=peft_layer.lora_B["default"])
        weight = peft_layer.get_base_layer().weight
        return dora.get_weight_norm(weight, lora_weight.detach(), scaling=peft_layer.scaling["default"]).detach()

    def ours_norm():
        weight = ours_layer.get_base_layer().weight
        lora_A, lora_B = ours_layer.lora_A["default"].weight, ours_layer.lora_B["default"].weight
        return dora.weight_norm(weight, lora_A, lora_B, ours_layer.scaling["default"])

    return {"peft_dora": peft_norm, "ours": ours_norm}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    workload.setup(args)
    print(f"layer: {vars(args)}  torch threads={torch.get_num_threads()}")
    models = build(args)
    norms = norm_steps(models)
    peft_value, ours_value = norms["peft_dora"](), norms["ours"]()
    if not torch.allclose(ours_value.float(), peft_value.float(), rtol=1e-2 if args.dtype != "float32" else 1e-4):
        raise SystemExit("ours and PEFT's weight norms differ; the benchmark would compare different things")
    fwd_bwd = workload.interleaved_medians(fwd_bwd_steps(models, args), args.reps, 1, args.device, args.clock)
    norm = workload.interleaved_medians(norms, args.reps, 1, args.device, args.clock)
    print(f"{'candidate':<12}{'forward+backward (ms)':>24}{'norm alone (ms)':>18}")
    for name in fwd_bwd:
        norm_ms = f"{norm[name] * 1e3:.2f}" if name in norm else "-"
        print(f"{name:<12}{fwd_bwd[name] * 1e3:>24.2f}{norm_ms:>18}")
    print(workload.ratio_line("fwd+bwd ours/peft_dora", fwd_bwd["ours"] / fwd_bwd["peft_dora"], None))
    print(workload.ratio_line("fwd+bwd ours/lora", fwd_bwd["ours"] / fwd_bwd["lora"], None))
    print(workload.ratio_line("fwd+bwd ours_floor/lora", fwd_bwd["ours_floor"] / fwd_bwd["lora"], None))
    speedup = norm["peft_dora"] / norm["ours"]
    met = speedup >= NORM_TARGET
    verdict = f"(target >= {NORM_TARGET:.0f}x: {'met' if met else 'NOT met'})"
    print(f"{'norm speed-up peft_dora/ours':<34}{speedup:7.1f}x  {verdict}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
