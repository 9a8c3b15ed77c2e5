"""Hook specifications: what a dora-plugins plugin can provide.

A plugin is a module or object with functions marked ``@hookimpl`` and named after a spec
below; third-party packages expose it through the ``dora_plugins`` entry point group. Each
hook receives a ``register`` callback so that the core decides collisions and records which
plugin provided what.
"""

import pluggy

hookspec = pluggy.HookspecMarker("dora_plugins")
hookimpl = pluggy.HookimplMarker("dora_plugins")


@hookspec
def dora_adapter_presets(register):
    """Call ``register(name, factory, description)``; ``factory(**overrides)`` returns a ``peft.PeftConfig``."""


@hookspec
def dora_benchmarks(register):
    """Call ``register(benchmark)`` with a :class:`dora_plugins.benchmarks.Benchmark` per benchmark."""


@hookspec
def dora_answer_extractors(register):
    """Call ``register(name, extractor, description)``; ``extractor(text, benchmark, options) -> label or ''``."""
