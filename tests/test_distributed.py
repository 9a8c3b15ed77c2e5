"""Sharded training: FSDP2 (``fully_shard``) over 2 CPU processes (gloo) gives the adapter of a 1-process run.

Under FSDP2 the parameters exist whole only inside each wrapped module's forward. Our layer reads ``W0``,
``A``, ``B`` and the magnitude only there, and caches nothing across calls, so sharding changes nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import REPO

TRAIN = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    sys.path.insert(0, sys.argv[2])
    from helpers import make_tiny_llama
    from peft import get_peft_model
    from dora_plugins import DoraConfig

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = get_peft_model(make_tiny_llama(), DoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, detach_norm=False))
    with torch.no_grad():  # a trained-looking start: every term of the formula matters
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    if world > 1:
        for layer in model.base_model.model.model.layers:
            fully_shard(layer)
        fully_shard(model)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(2))
    for _ in range(4):  # each process gets its share of the same global batch; FSDP averages the gradients
        shard = ids.chunk(world)[rank]
        model(input_ids=shard, labels=shard).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    state = {n: getattr(p, "full_tensor", lambda p=p: p)().detach() for n, p in model.named_parameters()
             if p.requires_grad}
    if rank == 0:
        torch.save(state, sys.argv[1])
    dist.destroy_process_group()
    """
)


def train(tmp_path, processes: int) -> dict[str, torch.Tensor]:
    out = tmp_path / f"adapter_{processes}.pt"
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    cmd = [torchrun, "--nproc_per_node", str(processes), "--master_port", str(29500 + processes + os.getpid() % 500)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [*cmd, str(script), str(out), str(REPO / "tests")], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out)


@pytest.mark.slow
def test_fsdp2_on_two_processes_trains_the_adapter_of_one_process(tmp_path):
    sharded, single = train(tmp_path, 2), train(tmp_path, 1)
    assert sharded.keys() == single.keys() and len(single) == 2 * 5 * 3  # A, B, magnitude of 5 targets x 2 layers
    for name, value in single.items():
        assert ((sharded[name] - value).abs().max() / value.abs().max()).item() < 1e-5, name
