"""What ``dora demo`` trains and scores, per mode: the real model (the default), ``--tiny`` and ``--quick``.

The real run's budget, at most 15 minutes on two idle CPU cores, was sized by timing each phase (the demo prints
them, docs/demo.md has a run's): its CPU time on ONE thread, which bounds its wall time on two idle cores, is
under 11 minutes. Both adapters always get the same settings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

GENERATION = "dora_commonsense"  # the paper's protocol: generate, extract the label
OPTION_TEXT = "dora_commonsense_text"  # log-likelihood of each option's text, as lm-eval's arc_easy / piqa


@dataclass(frozen=True)
class Settings:
    """How much the demo trains and scores."""

    tiny: bool  # the random model built locally, instead of a real one
    max_steps: int  # optimizer steps per adapter
    limit: int | None  # evaluation items per benchmark; None: all of the bundled sample (40 each)
    text_limit: int | None  # items per benchmark of the option-text scoring (a forward pass per option)
    checkpoints: int  # checkpoints kept per run, evenly spaced, for 'dora analyze'
    learning_rate: float
    batch_size: int  # training records per optimizer step
    micro_batch: int  # records per forward pass; batch_size / micro_batch passes are accumulated per step
    num_beams: int  # 4: the paper's beam search; 1: greedy
    eval_batch_size: int  # lm-eval's --batch_size
    merge: bool  # also merge each adapter and score the merged models ('dora merge')
    groups: tuple[str, ...]  # the lm-eval groups scored
    budget_minutes: float | None = None  # the wall time the run should hold on 2 idle CPU cores; checked at the end
    seed: int = 0

    def describe_training(self) -> str:
        passes = ""
        if self.micro_batch != self.batch_size:
            passes = f" ({self.batch_size // self.micro_batch} accumulated passes of {self.micro_batch})"
        return f"{self.max_steps} steps of {self.batch_size} records{passes}, learning rate {self.learning_rate:g}"

    def describe_scoring(self) -> str:
        items = "all 40" if self.limit is None else str(self.limit)
        search = "greedy" if self.num_beams == 1 else f"beam search {self.num_beams}"
        text = f" and {OPTION_TEXT} ({self.text_limit} items)" if OPTION_TEXT in self.groups else ""
        return f"{GENERATION} ({items} items per benchmark, {search}){text}"

    @property
    def explanation(self) -> str:
        return TINY_EXPLANATION if self.tiny else REAL_EXPLANATION


# The real model: a 135M-parameter model on a CPU. Measured on one thread (CPU time, docs/demo.md): a training step of
# 4 records ~5.3 s (7 s with the 4 padded to the longest), a generated answer ~0.4-0.55 s (greedy; the paper's 4 beams
# cost ~4x the prefill), an option-text item ~1.2 s (a forward pass per option): so ~100 training records per adapter,
# 15 generated answers and 8 option-text items per benchmark and model.
REAL = Settings(
    tiny=False,
    max_steps=24,
    limit=15,
    text_limit=8,
    checkpoints=4,
    # Of three settings tried on 60 held-out TRAINING records (docs/demo.md), 1e-3 (24 x 4 or 48 x 2 records) answered
    # one constant label on 7 and 8 of the 8 benchmarks, 3e-4 (24 x 4) on 3 of 8; all three left 0 answers unread.
    learning_rate=3e-4,
    batch_size=4,
    micro_batch=1,  # one record per pass: no padding (4 random records padded to the longest: 37% more tokens)
    num_beams=1,
    eval_batch_size=16,
    merge=False,
    groups=(GENERATION, OPTION_TEXT),
    budget_minutes=15,
)
TINY = Settings(
    tiny=True,
    max_steps=120,
    limit=None,
    text_limit=None,
    checkpoints=6,
    learning_rate=5e-3,  # a tiny random model needs far more than the paper's 2e-4
    batch_size=8,
    micro_batch=8,
    num_beams=4,
    eval_batch_size=32,
    merge=True,
    groups=(GENERATION,),
)
QUICK = replace(TINY, max_steps=10, limit=4, checkpoints=2)  # the tiny demo, shortened for CI and smoke tests

TINY_EXPLANATION = """
A 0.1M-parameter model trained for a few minutes learns the answer format ('the correct answer is <label>',
with the labels each benchmark allows: the unread answers fall to about zero) but not the tasks: its accuracy
stays near chance. The tiny demo shows the pipeline (train, merge, score with the paper's prompts and extractors,
analyze), not the paper's numbers; run 'dora demo' without --tiny for a real model."""

REAL_EXPLANATION = """
Generation: after a few dozen steps the adapters answer in the paper's format ('the correct answer is <label>'),
which the base model does not (most of its answers are unread). Option text: the log-likelihood of each option's
text, what the model knows without any answer format. A 135M-parameter model scores far below the paper's 7B
models, and with a few items per benchmark a standard error is 10 points or more: compare rows, not decimals."""
