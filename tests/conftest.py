"""Shared fixtures: tiny models built from configs (nothing is downloaded), and the real corpora when present.

The full real corpora (LLM-Adapters files, HF rows, real generations) live outside the repository, in
``../shared/data`` or wherever ``DORA_SHARED_DATA`` points. Tests that need them are marked with
:data:`requires_shared_data` and skip, naming the folder, where it is absent; CI sets
``DORA_REQUIRE_SHARED_DATA=1`` so that they fail there instead of skipping.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DORA_SHARED_DATA") or REPO.parent / "shared" / "data").resolve()
TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]

_REQUIRED = os.environ.get("DORA_REQUIRE_SHARED_DATA", "") not in ("", "0")
requires_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir() and not _REQUIRED,
    reason=f"needs the real corpora in {SHARED_DATA} (set DORA_SHARED_DATA to their folder; CI runs these tests)",
)


def shared_files(pattern: str) -> list[Path]:
    """The files of ``SHARED_DATA`` matching ``pattern``; fails (never passes vacuously) when there are none."""
    files = sorted(SHARED_DATA.glob(pattern))
    if not files:
        pytest.fail(f"no file matches {SHARED_DATA / pattern}: a check over an empty set would pass vacuously")
    return files


def make_tiny_llama(seed: int = 0, dtype=torch.float32):
    """A 2-layer LLaMA with GQA, built from a config."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).to(dtype).eval()


@pytest.fixture(autouse=True)
def stock_peft_dora():
    """Every test starts with PEFT's own DoRA for ``LoraConfig(use_dora=True)``.

    Importing lm-eval's HF model (or ``trl.cli``) turns routing on for the whole process, as the start-up
    hook does for users; without this a test's outcome would depend on which tests ran before it.
    """
    layer = sys.modules.get("dora_plugins.peft_layer")
    if layer is not None:
        layer.route_peft(False)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread; on a busy 2-core machine two threads spin-wait (20-30x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
