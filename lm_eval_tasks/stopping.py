"""Per-candidate stop checks under beam search, so that lm-eval's beam search gives the paper's answers.

lm-eval (0.4.13) stops generation with ``MultiTokenEOSCriteria`` (``lm_eval.models.utils_hf``), one per
stop sequence, always including EOS. It tracks ``batch_size`` rows and returns one bool for the whole
call. Under beam search transformers calls it on every candidate, ``batch_size * 2 * num_beams`` rows
(item after item), so it reads only the first ``batch_size`` rows, the candidates of the first item;
once those have all held the stop sequence it returns True, which transformers applies to every
candidate of every item, and the whole batch stops:

- at batch size 1, as soon as the best candidate ends in EOS, although transformers' beam search
  (and the paper's script, which passes no stop criteria) would go on while another beam can still
  beat it: on a tiny model, 32 of 64 answers came out shorter than ``model.generate``'s;
- at batch size > 1, the other items of the batch stop wherever their beams are.

:func:`check_each_candidate` makes the check answer per row when it is called with more rows than it
tracks (beam search), as transformers' ``StoppingCriteria`` protocol allows: a candidate ending in the
stop sequence is finished, the others go on, exactly as transformers treats EOS itself. Greedy and
sampling calls (one row per item) keep lm-eval's own check.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch

_PATCHED = "__dora_plugins_per_candidate__"
# What lm-eval's __init__ takes, and keeps as the attributes of the same names (batch_size as done_tracker).
_INIT_PARAMETERS = ("sequence", "tokenizer", "initial_decoder_input_length", "batch_size")


def check_each_candidate(criteria_cls: type[Any]) -> None:
    """Wrap ``criteria_cls.__call__`` (lm-eval's ``MultiTokenEOSCriteria``) as the module docstring says; idempotent."""
    call = criteria_cls.__call__
    if getattr(call, _PATCHED, False):
        return
    parameters = inspect.signature(criteria_cls.__init__).parameters
    if any(name not in parameters for name in _INIT_PARAMETERS):
        raise TypeError(f"{criteria_cls.__qualname__}.__init__ does not take {_INIT_PARAMETERS}: lm-eval changed it")

    @functools.wraps(call)
    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> bool | torch.Tensor:
        if input_ids.shape[0] == len(self.done_tracker):  # one row per item: greedy or sampling
            return call(self, input_ids, scores, **kwargs)
        return candidates_ending_in_stop_sequence(self, input_ids)

    setattr(__call__, _PATCHED, True)
    criteria_cls.__call__ = __call__  # type: ignore[method-assign]  # patched on lm-eval's class, which it builds


def candidates_ending_in_stop_sequence(criteria, input_ids: torch.Tensor) -> torch.Tensor:
    """One bool per row of ``input_ids`` (rows, prompt + generated): its last tokens hold the stop sequence.

    The same window as lm-eval's check: the last ``sequence_id_len`` generated tokens, decoded.
    """
    generated = input_ids[:, criteria.initial_decoder_input_length :]  # (rows, generated so far)
    window = generated[:, -criteria.sequence_id_len :]  # (rows, <= sequence_id_len)
    texts = criteria.tokenizer.batch_decode(window)
    return torch.tensor([criteria.sequence in text for text in texts], dtype=torch.bool, device=input_ids.device)
