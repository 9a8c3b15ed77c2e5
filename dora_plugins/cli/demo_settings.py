"""What ``dora demo`` trains and scores, per mode: the real model (the default), ``--tiny`` and ``--quick``.

The real run's budget (SmolLM2-135M, two CPU cores, aiming at ten to fifteen minutes; one run measured 36 minutes
on a shared machine) was sized by measuring each step: see docs/demo.md. Both adapters always get the same settings.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    num_beams: int  # 4: the paper's beam search; 1: greedy
    eval_batch_size: int  # lm-eval's --batch_size
    merge: bool  # also merge each adapter and score the merged models ('dora merge')
    groups: tuple[str, ...]  # the lm-eval groups scored
    budget_minutes: float | None = None  # the wall time the run should hold on 2 idle CPU cores; checked at the end
    seed: int = 0

    def describe_training(self) -> str:
        return f"{self.max_steps} steps of {self.batch_size} records, learning rate {self.learning_rate:g}"

    def describe_scoring(self) -> str:
        items = "all 40" if self.limit is None else str(self.limit)
        search = "greedy" if self.num_beams == 1 else f"beam search {self.num_beams}"
        text = f" and {OPTION_TEXT} ({self.text_limit} items)" if OPTION_TEXT in self.groups else ""
        return f"{GENERATION} ({items} items per benchmark, {search}){text}"

    @property
    def explanation(self) -> str:
        return TINY_EXPLANATION if self.tiny else REAL_EXPLANATION


# The real model: a 135M-parameter model on two CPU cores. A training step of 4 records costs ~5-10 s of CPU
# there, a generated answer ~1 s (greedy; the paper's 4 beams cost ~4x the prefill), an option's log-likelihood
# ~0.7 s: so ~100 training records per adapter, 15 generated answers and 8 option-text items per benchmark and
# model. See docs/demo.md for the measurements.
REAL = Settings(
    tiny=False,
    max_steps=24,
    limit=15,
    text_limit=8,
    checkpoints=4,
    learning_rate=1e-3,  # a short run: the paper's 2e-4 is for three epochs of 170k records
    batch_size=4,
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
    num_beams=4,
    eval_batch_size=32,
    merge=True,
    groups=(GENERATION,),
)
QUICK = Settings(
    tiny=True,
    max_steps=10,
    limit=4,
    text_limit=None,
    checkpoints=2,
    learning_rate=5e-3,
    batch_size=8,
    num_beams=4,
    eval_batch_size=32,
    merge=True,
    groups=(GENERATION,),
)

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
