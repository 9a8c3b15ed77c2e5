"""Fixtures for the TRL tests: a tiny LLaMA saved with a tokenizer trained locally (nothing is downloaded).

Records come from ``tests/data`` (a sample of the real LLM-Adapters BoolQ training file, see its README),
so these tests need nothing beside the repository.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import REPO, bpe_tokenizer, make_tiny_llama

BOOLQ_SAMPLE = REPO / "tests" / "data" / "llm_adapters" / "boolq_train_200.json"


@pytest.fixture(scope="session")
def boolq_records() -> list[dict]:
    """The first 200 records of the real LLM-Adapters BoolQ training file (copy before changing one)."""
    return json.loads(BOOLQ_SAMPLE.read_text())


@pytest.fixture(scope="session")
def boolq_tokenizer(boolq_records):
    from dora_plugins.prompts import train_text

    return bpe_tokenizer([train_text(r["instruction"], r["output"]) for r in boolq_records])


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, boolq_tokenizer) -> Path:
    """A 2-layer LLaMA (hidden 32) and its tokenizer, saved as a model directory."""
    directory = tmp_path_factory.mktemp("tiny_llama")
    model = make_tiny_llama(
        vocab_size=len(boolq_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        max_position_embeddings=512,
        initializer_range=0.2,  # a random model with real contrast in its logits learns in a few steps
        bos_token_id=1,
        eos_token_id=2,
    )
    model.save_pretrained(directory)
    boolq_tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def boolq64(tmp_path_factory, boolq_records) -> Path:
    """The first 64 BoolQ training records as an LLM-Adapters JSON file."""
    path = tmp_path_factory.mktemp("data") / "boolq64.json"
    path.write_text(json.dumps(boolq_records[:64]))
    return path
