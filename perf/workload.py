"""The benchmark workload shared by the scripts in this folder: a LLaMA-architecture model built from a config
(nothing is downloaded), the three candidates, and the measuring primitives (median time, peak memory growth).

Candidates: ``lora`` (``peft.LoraConfig``), ``peft_dora`` (``LoraConfig(use_dora=True)``, PEFT's own DoRA) and
``ours`` (``dora_plugins.DoraConfig``), all with the same rank, alpha = 2 * rank, dropout and targets; on request
also ``ours_branch`` (``DoraConfig(dropout_mode="lora_branch")``: dropout on the LoRA branch only).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import torch

CANDIDATES = ("lora", "peft_dora", "ours")
ALL_CANDIDATES = (*CANDIDATES, "ours_branch")
# "cpu": the CPU time of the whole process, which other processes on a shared machine slow far less than the wall.
# "cuda": CUDA events around the call (the GPU's own time; CUDA devices only).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time, "cuda": time.perf_counter}
TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The options every script shares: model shape, adapter, device and precision."""
    parser.add_argument(
        "--model",
        help="a real model instead of a random one: a name of `dora pull` (smollm2-135m) or a transformers folder;"
        " --hidden, --layers and --vocab then come from its config",
    )
    parser.add_argument("--hidden", type=int, default=1024, help="hidden size (heads of 64)")
    parser.add_argument("--layers", type=int, default=2, help="decoder layers")
    parser.add_argument("--vocab", type=int, default=32000, help="vocabulary size (LLaMA's is 32000)")
    parser.add_argument("--rank", type=int, default=32, help="adapter rank r (lora_alpha = 2r)")
    parser.add_argument("--dropout", type=float, default=0.0, help="adapter dropout (the paper uses 0.05)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="model dtype")
    parser.add_argument("--bits", type=int, choices=[4, 8], help="quantize the base with bitsandbytes (QDoRA)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    add_clock_arg(parser)
    parser.add_argument("--seed", type=int, default=0)


def add_clock_arg(parser: argparse.ArgumentParser) -> None:
    """``--clock``: what a measured time is (:data:`CLOCKS`)."""
    parser.add_argument(
        "--clock",
        choices=CLOCKS,
        default="wall",
        help="wall time, or the process's CPU time: steadier on a shared machine, and with --threads 1 close to"
        " the wall time on an idle one",
    )


def setup(args: argparse.Namespace) -> None:
    """Apply --threads and --seed, and refuse a CUDA run on a machine without CUDA (or timed by CPU time)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if getattr(args, "clock", "wall") == "cuda" and not args.device.startswith("cuda"):
        raise SystemExit("--clock cuda times CUDA events; use it with --device cuda (or --clock cpu on the CPU).")
    if args.device.startswith("cuda") and getattr(args, "clock", "wall") == "cpu":
        raise SystemExit("--clock cpu does not see the time a GPU works; use --clock wall with --device cuda.")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device} was given but torch.cuda.is_available() is False; use --device cpu.")
    torch.manual_seed(args.seed)


def build_base(args: argparse.Namespace, max_positions: int = 2048):
    """A randomly initialised LLaMA (heads of 64, intermediate 2.6875 x hidden as in LLaMA-7B) in eval mode.

    With ``--bits``, a function that loads a fresh bitsandbytes-quantized copy (quantized models do not deepcopy).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    if getattr(args, "model", None):
        return _pretrained(args)
    heads = max(1, args.hidden // 64)
    config = LlamaConfig(
        hidden_size=args.hidden,
        intermediate_size=int(args.hidden * 2.6875) // 64 * 64 or 64,
        num_hidden_layers=args.layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        vocab_size=args.vocab,
        max_position_embeddings=max_positions,
    )
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(config).to(device=args.device, dtype=getattr(torch, args.dtype))
    return _quantized_copies(model, args) if args.bits else model.eval()


def _pretrained(args: argparse.Namespace):
    """The real model ``args.model`` (a ``dora pull`` name or a folder); sets args.hidden, layers and vocab."""
    from transformers import AutoModelForCausalLM

    folder = _model_folder(args.model)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, args.dtype)).to(args.device)
    config = model.config
    args.hidden, args.layers, args.vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    if args.bits:
        return _quantized_copies(model, args)
    return model.eval()


def _model_folder(name: str) -> str:
    """``dora pull``'s folder for ``name`` (or ``name`` itself), also under a commit from before ``dora pull``."""
    try:
        from dora_plugins.pull import resolve_model
    except ImportError:  # perf.matrix measuring an older commit's layer (PYTHONPATH=OLD_CHECKOUT:.)
        folder = Path(os.environ.get("DORA_PLUGINS_CACHE", "~/.cache/dora-plugins")).expanduser() / "models" / name
        return str(folder) if folder.is_dir() else name
    return resolve_model(name)


def _quantized_copies(model, args: argparse.Namespace):
    import tempfile

    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    folder = tempfile.mkdtemp(prefix="dora-bench-")
    model.save_pretrained(folder)
    four_bit = {"load_in_4bit": True, "bnb_4bit_compute_dtype": model.dtype}
    options = {"load_in_8bit": True} if args.bits == 8 else four_bit
    device_map = {"": args.device} if args.device.startswith("cuda") else None
    return lambda: AutoModelForCausalLM.from_pretrained(
        folder, quantization_config=BitsAndBytesConfig(**options), device_map=device_map
    ).eval()


def wrap(base, candidate: str, args: argparse.Namespace, targets: list[str] = TARGETS, task_type="CAUSAL_LM"):
    """``base`` (copied) with the candidate's adapter on ``targets``; B is made non-zero."""
    from peft import LoraConfig, get_peft_model

    from dora_plugins import DoraConfig

    kwargs = dict(
        r=args.rank, lora_alpha=2 * args.rank, lora_dropout=args.dropout, target_modules=targets, task_type=task_type
    )
    if candidate == "lora":
        config = LoraConfig(**kwargs)
    elif candidate == "peft_dora":
        with _peft_own_dora():
            config = LoraConfig(use_dora=True, **kwargs)
    elif candidate == "ours":
        config = DoraConfig(**kwargs)
    elif candidate == "ours_branch":
        config = DoraConfig(dropout_mode="lora_branch", **kwargs)
    else:
        raise ValueError(f"Unknown candidate {candidate!r}; choose from {', '.join(ALL_CANDIDATES)}.")
    torch.manual_seed(args.seed + 1)  # the same A for every candidate
    model = get_peft_model(copy.deepcopy(base) if isinstance(base, torch.nn.Module) else base(), config)
    generator = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():  # a trained-looking adapter, so no candidate gets a shortcut from B = 0
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.01 * torch.randn(param.shape, generator=generator))
    return model


def check_layers(models: dict) -> None:
    """Refuse candidates whose DoRA layers are not theirs: ``peft_dora`` must run PEFT's, ``ours`` dora-plugins'."""
    for candidate, model in models.items():
        ours = sum(type(module).__name__ == "DoraLinear" for module in model.modules())
        if (candidate == "peft_dora" and ours) or (candidate.startswith("ours") and not ours):
            raise SystemExit(f"perf: the {candidate} candidate does not run the DoRA layer it names.")


@contextlib.contextmanager
def _peft_own_dora() -> Iterator[None]:
    """PEFT's own DoRA layer for configs made in the block, also where lm-eval's import turned routing on."""
    try:
        from dora_plugins import peft_layer
    except ImportError:  # an older commit's layer
        yield
        return
    routing = getattr(peft_layer, "_routing", {"enabled": False})
    before = routing["enabled"]
    routing["enabled"] = False
    try:
        yield
    finally:
        routing["enabled"] = before


def release_freed_memory() -> None:
    """Collect garbage and have glibc give the freed heap pages back (``malloc_trim``; elsewhere a no-op).

    Between workloads of a run under glibc's adaptive mmap threshold (:mod:`perf.matrix` without training rows),
    which would otherwise keep the freed model copies resident.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, clock: str = "wall") -> float:
    """Seconds ``fn()`` takes on ``clock`` (:data:`CLOCKS`), with the device synchronised on both sides."""
    if clock == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    now = CLOCKS[clock]
    synchronize(device)
    start = now()
    fn()
    synchronize(device)
    return now() - start


def interleaved_medians(steps: dict, reps: int, warmup: int, device: str, clock: str = "wall") -> dict[str, float]:
    """Median time per candidate, running the candidates in turn (rotating who goes first) ``reps`` times."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    times = {name: [] for name in names}
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            times[name].append(timed(steps[name], device, clock))
    return {name: statistics.median(values) for name, values in times.items()}


class PeakMemory:
    """Peak memory growth over a block: CUDA's allocator peak, or the process's peak resident set on Linux.

    On CPU the kernel's high-water mark (VmHWM) is reset on entry through ``/proc/self/clear_refs``, so the
    peak reflects only the block, not the model construction before it.
    """

    def __init__(self, device: str):
        self.device = device
        self.growth = 0

    def __enter__(self):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
            self.start = _proc_status_kb("VmRSS") * 1024
        return self

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.growth = torch.cuda.max_memory_allocated() - self.start
        else:
            self.growth = _proc_status_kb("VmHWM") * 1024 - self.start


def _proc_status_kb(field: str) -> int:
    with open(f"/proc/{os.getpid()}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status; CPU memory is measured on Linux only.")


def ratio_line(label: str, value: float, target: float | None) -> str:
    """``label  1.023  (target <= 1.05: met)``."""
    verdict = "" if target is None else f"  (target <= {target:.2f}: {'met' if value <= target else 'NOT met'})"
    return f"{label:<34}{value:7.3f}{verdict}"
