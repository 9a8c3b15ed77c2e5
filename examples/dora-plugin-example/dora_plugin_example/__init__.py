"""An example dora-plugins plugin: the preset ``dora_attention`` and the extractor ``last_label``.

dora-plugins finds this module through the ``dora_plugins`` entry point declared in
``pyproject.toml`` and calls the functions marked ``@hookimpl`` whose names match its hook
specifications (``dora_plugins.hookspecs``). Each hook gets a ``register`` callback; the core
records which plugin registered what and refuses a name that two plugins register.
"""

from __future__ import annotations

import re

from dora_plugins.hookspecs import hookimpl

ATTENTION_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]


def dora_attention(**overrides):
    """DoRA on the attention projections only (q, k, v, o), rank 8: a light adapter for quick trials."""
    from dora_plugins import DoraConfig

    return DoraConfig(**{"r": 8, "lora_alpha": 16, "target_modules": list(ATTENTION_MODULES), **overrides})


def last_label(text: str, benchmark: str, options: list[str] | None = None) -> str:
    """The last of the benchmark's labels named in the response (any case, whole words); '' if none."""
    from dora_plugins.benchmarks import get_benchmark

    labels = get_benchmark(benchmark).labels  # built-in or from any plugin; unknown names raise a clear error
    response = text.rsplit("### Response:", 1)[-1]
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, labels)) + r")\b", re.IGNORECASE)
    found = pattern.findall(response)
    return found[-1].lower() if found else ""


@hookimpl
def dora_adapter_presets(register):
    register("dora_attention", dora_attention, "DoRA r=8, alpha=16 on q,k,v,o only (example plugin)")


@hookimpl
def dora_answer_extractors(register):
    register("last_label", last_label, "The last label the response names (example plugin)")
