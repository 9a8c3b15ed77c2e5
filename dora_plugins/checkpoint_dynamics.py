"""delta-M / delta-D (:mod:`dora_plugins.dynamics`) of checkpoints on disk against their base model.

A checkpoint is a PEFT adapter folder (LoRA or DoRA: ``adapter_config.json`` + ``adapter_model.safetensors``) or
a fully fine-tuned model folder (``config.json`` + safetensors), such as the ``checkpoint-N`` folders a Trainer
writes. Weights are read one tensor at a time from safetensors (never a whole model), and every shape is
checked against the base model, so that a checkpoint of another base is an error, not a wrong number.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .dynamics import RowChange, adapter_change, finetuned_change
from .errors import ConfigError, DataError, MissingFileError

if TYPE_CHECKING:
    import torch

STEP_FOLDER = re.compile(r"checkpoint-(\d+)")
# PEFT's saved keys: base_model.model.<module>.lora_A.weight, .lora_B.weight, .lora_magnitude_vector
_ADAPTER_KEY = re.compile(r"(?:base_model\.model\.)?(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_magnitude_vector)")
METHODS = ("LoRA", "DoRA", "FT")


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint folder: its training run (the absolute path of the folder that holds it), step and method."""

    path: Path
    run: str
    step: int
    method: str  # one of METHODS


@dataclass(frozen=True)
class ModuleChange:
    """delta-M and delta-D of one weight matrix, e.g. ``model.layers.0.self_attn.q_proj``."""

    module: str
    delta_m: float
    delta_d: float

    @property
    def target(self) -> str:
        """The module's own name (``q_proj``), as in PEFT's ``target_modules``."""
        return self.module.rsplit(".", 1)[-1]


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Classify a checkpoint folder, or raise a clear error; reads only small JSON files."""
    from .adapter import read_adapter_config

    path = Path(path)
    if not path.is_dir():
        raise MissingFileError(f"Checkpoint {path} is not a folder. Pass adapter or model folders: out/checkpoint-*")
    if (path / "adapter_config.json").is_file():
        config = read_adapter_config(path)
        if config.get("peft_type") != "LORA":
            raise ConfigError(f"Checkpoint {path} is a {config['peft_type']} adapter; only LoRA and DoRA are analyzed.")
        method = "DoRA" if config.get("use_dora") else "LoRA"
    elif (path / "config.json").is_file():
        method = "FT"
    else:
        raise MissingFileError(
            f"Checkpoint {path} holds neither adapter_config.json (a PEFT adapter) nor config.json (a model). "
            "Pass the checkpoint-N folders of a training run."
        )
    return Checkpoint(path, str(path.resolve().parent), _step(path), method)


def run_labels(checkpoints: Iterable[Checkpoint]) -> dict[str, str]:
    """A short name per run: the fewest trailing path parts that tell the runs apart (``lora``, ``a/out``)."""
    runs = sorted({checkpoint.run for checkpoint in checkpoints})  # distinct absolute paths

    def labels(depth: int) -> dict[str, str]:
        return {run: "/".join(Path(run).parts[-depth:]) for run in runs}

    depth = 1
    while len(set(labels(depth).values())) < len(runs):
        depth += 1
    return labels(depth)


def _step(path: Path) -> int:
    match = STEP_FOLDER.fullmatch(path.name)
    if match:
        return int(match.group(1))
    state = path / "trainer_state.json"
    if state.is_file():
        try:
            return int(json.loads(state.read_text())["global_step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{state} has no readable global_step ({exc!r}).") from exc
    raise ConfigError(
        f"Cannot tell the training step of checkpoint {path}: its name is not checkpoint-N and it has no "
        "trainer_state.json. Pass the checkpoint-N folders a Trainer writes."
    )


class WeightFolder:
    """The tensors of a model folder's safetensors files, read one at a time."""

    def __init__(self, folder: str | Path, what: str):
        from safetensors import SafetensorError, safe_open

        self.folder, self.what = Path(folder), what
        index = self.folder / "model.safetensors.index.json"
        files = (
            sorted({self.folder / name for name in json.loads(index.read_text())["weight_map"].values()})
            if index.is_file()
            else sorted(self.folder.glob("*.safetensors"))
        )
        if not files:
            raise MissingFileError(
                f"The {what} {self.folder} holds no safetensors weights; dora analyze reads safetensors only "
                "(re-save it with save_pretrained())."
            )
        self._files: dict[str, Any] = {}  # key -> safetensors' safe_open handle of its file
        for file in files:
            try:
                handle = safe_open(str(file), framework="pt")
            except (SafetensorError, OSError) as exc:
                raise DataError(f"{file} is corrupt or not safetensors ({exc}).") from exc
            self._files.update(dict.fromkeys(handle.keys(), handle))

    def keys(self) -> list[str]:
        return list(self._files)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._files[key].get_slice(key).get_shape())

    def get(self, key: str):
        return self._files[key].get_tensor(key)

    def weight(self, module: str, checkpoint: Path, shape: tuple[int | None, ...]):
        """``<module>.weight``, checked to exist with ``shape``: otherwise the checkpoint is for another base."""
        key = f"{module}.weight"
        if key not in self._files or self.shape(key) != shape:
            found = f"shape {list(self.shape(key))}" if key in self._files else "no such weight"
            raise ConfigError(
                f"Checkpoint {checkpoint} does not fit the {self.what} {self.folder}: it needs {key} of shape "
                f"{list(shape)}, the {self.what} has {found}. Pass the base model it was trained from (--base)."
            )
        return self.get(key)


def checkpoint_changes(base: WeightFolder, checkpoint: Checkpoint, modules: Iterable[str]) -> list[ModuleChange]:
    """delta-M and delta-D of every analyzed weight matrix of ``checkpoint``, sorted by module name.

    ``modules``: module names (``q_proj``, ...) to analyze; empty means every module an adapter trains, and
    for a fully fine-tuned model the paper's targets (q, k, v, up and down projections).
    """
    wanted = set(modules)
    changes = (
        _finetuned_changes(base, checkpoint, wanted)
        if checkpoint.method == "FT"
        else _adapter_changes(base, checkpoint, wanted)
    )
    if not changes:
        which = f"of the modules {', '.join(sorted(wanted))}" if wanted else "of a linear layer"
        raise ConfigError(
            f"Checkpoint {checkpoint.path} changes no weight {which}. Choose --modules among those it trains."
        )
    return sorted(changes, key=lambda change: change.module)


def _adapter_changes(base: WeightFolder, checkpoint: Checkpoint, wanted: set[str]) -> list[ModuleChange]:
    """LoRA and DoRA modules; one with only a magnitude is DoRA with B = 0."""
    from safetensors.torch import load_file

    from .adapter import WEIGHTS_FILE, check_adapter

    config = check_adapter(checkpoint.path)
    factors: dict[str, dict] = {}
    for key, tensor in load_file(str(checkpoint.path / WEIGHTS_FILE)).items():
        match = _ADAPTER_KEY.fullmatch(key.removesuffix(".weight"))
        if match and (not wanted or match["module"].rsplit(".", 1)[-1] in wanted):
            factors.setdefault(match["module"], {})[match["kind"]] = tensor
    changes = []
    for module, parts in factors.items():
        lora_A, lora_B, magnitude = (parts.get(k) for k in ("lora_A", "lora_B", "lora_magnitude_vector"))
        if lora_A is not None and lora_A.dim() != 2:
            continue  # a convolution's or embedding's LoRA: not a weight matrix of the paper's analysis
        # check_adapter pairs every lora_A with its lora_B: a module without lora_B has a magnitude.
        out = (lora_B if lora_B is not None else cast("torch.Tensor", magnitude)).shape[0]
        in_ = lora_A.shape[1] if lora_A is not None else None
        weight = _base_weight(base, module, checkpoint.path, out, in_, config.get("fan_in_fan_out", False))
        scaling = _scaling(config, module, lora_A.shape[0]) if lora_A is not None else 0.0
        changes.append(_module_change(module, adapter_change(weight, lora_A, lora_B, scaling, magnitude)))
    return changes


def _base_weight(base: WeightFolder, module: str, checkpoint: Path, out: int, in_: int | None, transposed: bool):
    """``W0`` (out, in) of ``module``; ``in_`` None (a magnitude-only module) takes the base's input size."""
    key = f"{module}.weight"
    if in_ is None and key in base.keys():
        in_ = base.shape(key)[0 if transposed else 1]
    shape = (in_, out) if transposed else (out, in_)
    weight = base.weight(module, checkpoint, shape)
    return weight.t() if transposed else weight  # (out, in)


def _scaling(config: dict, module: str, rank: int) -> float:
    """PEFT's ``lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA), with ``alpha_pattern`` matched as PEFT matches it."""
    alpha = config["lora_alpha"]
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            alpha = value
            break
    return alpha / rank**0.5 if config.get("use_rslora") else alpha / rank


def _finetuned_changes(base: WeightFolder, checkpoint: Checkpoint, wanted: set[str]) -> list[ModuleChange]:
    """Every 2-D ``<module>.weight`` of a fully fine-tuned model whose module name is in ``wanted``."""
    from .config import PAPER_TARGET_MODULES

    wanted = wanted or set(PAPER_TARGET_MODULES)
    model = WeightFolder(checkpoint.path, "checkpoint")
    changes = []
    for key in model.keys():
        module = key.removesuffix(".weight")
        if key == module or module.rsplit(".", 1)[-1] not in wanted or len(model.shape(key)) != 2:
            continue
        weight = base.weight(module, checkpoint.path, model.shape(key))
        changes.append(_module_change(module, finetuned_change(weight, model.get(key))))
    return changes


def _module_change(module: str, change: RowChange) -> ModuleChange:
    return ModuleChange(module, change.delta_m, change.delta_d)
