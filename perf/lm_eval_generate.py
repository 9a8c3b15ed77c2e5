"""Generation through lm-eval's own ``HFLM.generate_until``, for :mod:`perf.matrix`'s ``lm_eval`` rows.

The candidate models the matrix builds (LoRA, PEFT's DoRA, ours, on one base) are wrapped in lm-eval's ``HFLM``
as they are (``HFLM(pretrained=MODEL, tokenizer=...)``), with a tokenizer trained locally on the benchmarks'
prompts for a random model (as in :mod:`perf.eval_batch`; padded with filler tokens to the model's vocabulary, so
every generated id decodes to a text of its own) or the real model's own tokenizer. The requests are lm-eval's
``generate_until`` instances of the ``dora_piqa`` task over the items shipped with the package, all passed in one
call as an lm-eval run passes a task's requests, with greedy search or 4 beams, and every answer forced to exactly
``new_tokens`` tokens (:func:`forced_length`), so that the time per new token is the call's time over
items x new tokens (each prompt's forward included).

Inside lm-eval, dora-plugins runs each request method in one ``inference_cache()``
(:class:`dora_plugins.inference.LmEvalHook`): one norm per layer per call, that is per lm-eval run.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from perf import eval_batch

TASK = "dora_piqa"
MAX_LENGTH = 2048  # lm-eval's context limit: the prompts are never cut, whatever the model config says


def forced_length(instances: list, beams: int, new_tokens: int) -> list:
    """The requests with the task's generation settings, but ``beams`` beams and exactly ``new_tokens`` tokens.

    The dora tasks stop only at EOS (``until: []``), which ``min_new_tokens`` holds back until the last token.
    """
    forced = []
    for instance in instances:
        context, gen_kwargs = instance.args
        gen_kwargs = {**gen_kwargs, "num_beams": beams, "max_gen_toks": new_tokens, "min_new_tokens": new_tokens}
        forced.append(dataclasses.replace(instance, arguments=(context, gen_kwargs)))
    return forced


def requests(items: int) -> list:
    """lm-eval's generate_until instances of :data:`TASK`, ``items`` of them (at most 40 ship with the package)."""
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    instances = eval_batch.requests(items, TASK)
    if len(instances) < items:
        raise SystemExit(f"perf.matrix: {TASK} ships {len(instances)} items; use --lm-eval-items {len(instances)}.")
    return instances


def tokenizer(vocab_size: int, folder: str | None = None):
    """The real model's tokenizer (``folder``), or one trained on the prompts and padded to ``vocab_size`` ids."""
    from transformers import AutoTokenizer

    if folder:
        return AutoTokenizer.from_pretrained(folder)
    built = eval_batch.prompt_tokenizer(min(vocab_size, 512))
    if len(built) > vocab_size:
        raise SystemExit(f"perf.matrix: the prompt tokenizer has {len(built)} ids, the model {vocab_size}.")
    built.add_tokens([f"<filler_{i}>" for i in range(vocab_size - len(built))])
    return built


def wrap(model, tok):
    """``model`` (a candidate, in eval mode) as lm-eval's HF model at batch size 1, its EOS and pad the tokenizer's."""
    from lm_eval.models.huggingface import HFLM

    model.eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    return HFLM(pretrained=model, tokenizer=tok, batch_size=1, max_length=MAX_LENGTH)


def make_generate_until(lm, instances: list, beams: int, new_tokens: int, answers: dict, key):
    """A closure calling ``lm.generate_until`` on all ``instances`` at once, keeping the answers in ``answers[key]``."""
    forced = forced_length(instances, beams, new_tokens)

    def generate_until():
        with torch.no_grad():
            answers[key] = lm.generate_until(forced, disable_tqdm=True)

    return generate_until


def differing(answers: list[str], reference: list[str]) -> int:
    """How many answers differ from the reference's."""
    return sum(a != b for a, b in zip(answers, reference, strict=True))
