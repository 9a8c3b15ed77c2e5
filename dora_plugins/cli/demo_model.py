"""A tiny LLaMA-architecture model and its tokenizer, built locally for ``dora demo``.

Nothing is downloaded: a byte-level BPE tokenizer is trained on the demo's own text in well
under a second, and the model is initialised from a ``LlamaConfig``. Both are saved in the
ordinary ``save_pretrained`` format, so every tool (TRL, PEFT, lm-eval) loads them by path.
"""

from __future__ import annotations

from collections.abc import Iterable

# A larger initial scale than LLaMA's 0.02: the tied embeddings stay frozen under DoRA, and with
# hidden 64 their scale bounds how confident the model can become (0.02 keeps logits below ~1.3).
INIT_STD = 0.2
SPECIAL_TOKENS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}


def build_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    """A ``PreTrainedTokenizerFast`` (byte-level BPE, LLaMA-style special tokens) trained on ``texts``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    # Runs of 2+ whitespace characters are tokens of their own, so that a prompt ending in the
    # template's 16-space indent tokenizes as it did in training, where the answer followed it.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\s{2,}"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=1024, **SPECIAL_TOKENS)


def build_model(tokenizer, seed: int = 0):
    """A randomly initialised 2-layer LLaMA (hidden 64, about 0.12M parameters) for ``tokenizer``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=INIT_STD,
    )
    return LlamaForCausalLM(config)


def save_base_model(directory: str, texts: Iterable[str], seed: int = 0) -> str:
    """Build the tokenizer on ``texts`` and the model, save both to ``directory``, return it."""
    tokenizer = build_tokenizer(texts)
    model = build_model(tokenizer, seed=seed)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory
