"""Test-only: let accelerate run FSDP on the CPU (gloo), which it refuses, so ``accelerate launch`` with TRL's
``fsdp2.yaml`` can be tested without a GPU. Put this folder first on ``PYTHONPATH``.

accelerate 1.16 picks FSDP only for accelerator device types (``AcceleratorState.__init__``: MULTI_GPU, MULTI_XPU,
...); with ``use_cpu`` it sets up MULTI_CPU (gloo) and silently drops the FSDP plugin, so every process would
train the whole model under DDP. This patch changes exactly that decision: after accelerate's own set-up, a
MULTI_CPU state whose launcher asked for FSDP becomes FSDP with accelerate's plugin (built from the launcher's
``FSDP_*`` variables, as on a GPU). Wrapping (``fully_shard``), gradient reduce-scatter, the gathered
FULL_STATE_DICT checkpoints and resuming are accelerate's and transformers' unchanged code.
"""

import os

if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
    import accelerate.state as _state

    _init = _state.AcceleratorState.__init__

    def _init_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
        _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if self.distributed_type != _state.DistributedType.MULTI_CPU:
            return
        if fsdp_plugin is None:
            from accelerate.utils import FullyShardedDataParallelPlugin

            fsdp_plugin = FullyShardedDataParallelPlugin()
        if self._mixed_precision != "no":
            fsdp_plugin.set_mixed_precision(self._mixed_precision)
        self.distributed_type = _state.DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin
        _state.PartialState._shared_state["distributed_type"] = self.distributed_type

    _state.AcceleratorState.__init__ = _init_fsdp_on_cpu

if os.environ.get("DORA_TEST_ROUTING_PROBE") == "1":  # which DoRA layer trl's training script ran (test_trl_launchers)
    import atexit
    import sys

    def _report_routing() -> None:
        layer = sys.modules.get("dora_plugins.peft_layer")
        if sys.argv[0].endswith(os.path.join("trl", "scripts", "sft.py")) and layer and layer._routing["enabled"]:
            sys.stderr.write("ROUTED-IN-TRAINING-PROCESS\n")

    atexit.register(_report_routing)
