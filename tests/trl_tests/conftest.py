"""Fixtures for the TRL tests: a tiny LLaMA saved with a tokenizer trained locally (nothing is downloaded).

Records come from ``tests/data`` (a sample of the real LLM-Adapters BoolQ training file, see its README),
so these tests need nothing beside the repository.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BOOLQ_SAMPLE = REPO / "tests" / "data" / "llm_adapters" / "boolq_train_200.json"


@pytest.fixture(scope="session")
def boolq_records() -> list[dict]:
    """The first 200 records of the real LLM-Adapters BoolQ training file (copy before changing one)."""
    return json.loads(BOOLQ_SAMPLE.read_text())


def make_tokenizer(texts: list[str], vocab_size: int = 400):
    """A byte-level BPE tokenizer (adds <s>, EOS is </s>) trained on ``texts``: decoding gives the text back."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="session")
def boolq_tokenizer(boolq_records):
    from dora_plugins.prompts import train_text

    return make_tokenizer([train_text(r["instruction"], r["output"]) for r in boolq_records])


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, boolq_tokenizer) -> Path:
    """A 2-layer LLaMA (hidden 32) and its tokenizer, saved as a model directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = tmp_path_factory.mktemp("tiny_llama")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(boolq_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.2,  # a random model with real contrast in its logits learns in a few steps
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    boolq_tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def boolq64(tmp_path_factory, boolq_records) -> Path:
    """The first 64 BoolQ training records as an LLM-Adapters JSON file."""
    path = tmp_path_factory.mktemp("data") / "boolq64.json"
    path.write_text(json.dumps(boolq_records[:64]))
    return path
