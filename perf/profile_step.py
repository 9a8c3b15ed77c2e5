"""Where a training step's time and memory go, per candidate: the evidence behind the ratios of train_step.py.

Time: torch.profiler's self CPU time of the step, split into matrix products (``aten::mm``/``addmm``/...) and
everything else. Memory: the activations autograd keeps at the end of the forward (distinct storages, parameters
excluded), in total and for those shaped like a layer output (tokens x out features) or input.

    python -m perf.profile_step --dropout 0.05
"""

from __future__ import annotations

import sys
import weakref

import torch

from perf import train_step, workload

MATMULS = {"aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm"}


def time_split(step, steps: int) -> tuple[float, float]:
    """Seconds per step in matrix products and in everything else (profiler self CPU time)."""
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages()
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMULS) / 1e6 / steps
    total = sum(e.self_cpu_time_total for e in events) / 1e6 / steps
    return matmul, total - matmul


def saved_activations(model, ids: torch.Tensor) -> float:
    """MiB of distinct storages autograd still holds for backward once the forward is done."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    alive = []

    def pack(tensor):
        alive.append(weakref.ref(tensor))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
    storages = {}
    for ref in alive:
        tensor = ref()
        if tensor is not None and tensor.untyped_storage().data_ptr() not in params:
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
    del loss
    return sum(storages.values()) / 2**20


def main(argv: list[str] | None = None) -> int:
    args = train_step.parse_args(sys.argv[1:] if argv is None else argv)
    workload.setup(args)
    print(f"profile: {vars(args)}  torch threads={torch.get_num_threads()}")
    base = workload.build_base(args, args.seq)
    ids = train_step.batch_ids(args)
    print(f"{'candidate':<12}{'matmul s/step':>15}{'other s/step':>14}{'saved activations MiB':>24}")
    for name in args.candidates:
        model = workload.wrap(base, name, args)
        matmul, other = time_split(train_step.make_step(model, ids), args.reps)
        print(f"{name:<12}{matmul:>15.3f}{other:>14.3f}{saved_activations(model, ids):>24.1f}")
        del model
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
