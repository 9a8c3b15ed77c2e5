"""pytest plugin of ``tools/peft_suite.py``: keep PEFT's DoRA tests, and record what each one did.

Loaded with ``-p peft_suite_plugin`` in both runs (stock and routed). It

- keeps the DoRA-related tests (:func:`is_dora_test`) of the modules it is given and deselects the rest;
- with ``PEFT_SUITE_SUBSET=NAME`` keeps only the tests of that subset (:data:`SUBSETS`);
- appends one JSON line per test to the file ``PEFT_SUITE_OUTCOMES`` names: the test id, its outcome
  (``passed``, ``failed``, ``error``, ``skipped``, ``xfailed``, ``xpassed``), the first line of the failure or
  skip reason, its duration (setup, call and teardown) and the DoRA layer classes that it created (PEFT's
  ``peft.tuners.lora.dora`` layers, or ``dora_plugins`` ones), so the report can tell which layer each run
  really exercised. Each line is flushed at once: a run that crashes still leaves the outcomes before it.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

DORA_LAYER_MODULES = ("peft.tuners.lora.dora", "dora_plugins")

# Subsets of the DoRA-related tests: what each leaves out (test-id substrings). "ci" leaves out the cases of
# test_custom_models.py whose adapters sit only on Conv1d/2d/3d, nn.Embedding or transformers' Conv1D layers:
# those keep PEFT's own DoRA layer when routed, so both runs execute the same code. Every case with an
# nn.Linear target stays. A full run checks that no test left out creates one of our layers.
SUBSETS = {
    "full": (),
    "ci": (
        "Embedding + transformers Conv1D 1 DoRA-",
        "Embedding + transformers Conv1D 2 DoRA-",
        "Embedding + transformers Conv1D 3 DoRA-",
        "Conv1d LoRA with DoRA-",
        "Conv2d 1 LoRA with DoRA-",
        "Conv2d Groups LoRA with DoRA-",
        "Conv2d Groups2 LoRA with DoRA-",
        "Conv3d 1 LoRA with DoRA-",
    ),
}


def is_dora_test(item: pytest.Item) -> bool:
    """A test is DoRA-related when its id names DoRA or one of its parameters sets ``use_dora=True``.

    The id rule is what ``pytest -k dora`` keeps (``TestDoraCaching``, ``...LoRA with DoRA-MLP-...``); the
    parameter rule adds cases whose id hides the config (``test_lora_embed_scale_is_applied[True]``).
    """
    if "dora" in item.nodeid.lower():
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and _sets_use_dora(callspec.params)  # {"use_dora": True} for a bare parameter


def _sets_use_dora(value, depth: int = 0) -> bool:
    """True for ``{"use_dora": True}``, a config with ``use_dora=True``, or a tuple/list/dict holding one."""
    if getattr(value, "use_dora", None) is True:
        return True
    if depth >= 3:
        return False
    if isinstance(value, dict):
        return value.get("use_dora") is True or any(_sets_use_dora(v, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_sets_use_dora(v, depth + 1) for v in value)
    return False


def in_subset(test_id: str, subset: str) -> bool:
    """Whether a DoRA-related test belongs to ``subset`` (a key of :data:`SUBSETS`)."""
    return not any(part in test_id for part in SUBSETS[subset])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    subset = os.environ.get("PEFT_SUITE_SUBSET", "full")
    keep, drop = [], []
    for item in items:
        (keep if is_dora_test(item) and in_subset(item.nodeid, subset) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


class _Recorder:
    """Per-test outcome, duration and DoRA layers, written as JSON lines."""

    def __init__(self, path: str):
        self.file = open(path, "a", encoding="utf-8")
        self.row: dict | None = None
        torch.nn.modules.module.register_module_module_registration_hook(self.on_module)

    def on_module(self, module, name, submodule):
        cls = type(submodule)
        if self.row is not None and cls.__module__.startswith(DORA_LAYER_MODULES):
            self.row["layers"].add(f"{cls.__module__}.{cls.__qualname__}")

    def write(self, row: dict) -> None:
        self.file.write(json.dumps({**row, "layers": sorted(row["layers"]), "seconds": round(row["seconds"], 3)}))
        self.file.write("\n")
        self.file.flush()

    @pytest.hookimpl
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.skipped:  # a whole module skipped (GPU only, opt-in): one row, so the report names it
            self.write({**_row(report.nodeid), "outcome": "skipped", "message": f"whole module: {_first_line(report)}"})

    @pytest.hookimpl
    def pytest_runtest_logstart(self, nodeid: str, location) -> None:
        self.row = _row(nodeid)

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.row["seconds"] += report.duration
        outcome = _outcome(report)
        if outcome is not None and self.row["outcome"] in ("passed", "xpassed"):
            self.row["outcome"], self.row["message"] = outcome, _first_line(report)

    @pytest.hookimpl
    def pytest_runtest_logfinish(self, nodeid: str, location) -> None:
        self.write(self.row)
        self.row = None


def _row(nodeid: str) -> dict:
    return {"id": nodeid, "outcome": "passed", "message": "", "layers": set(), "seconds": 0.0}


def _outcome(report: pytest.TestReport) -> str | None:
    """This phase's verdict, or None when it changes nothing (a passing setup or teardown)."""
    xfail = hasattr(report, "wasxfail")
    if report.when == "call":
        if report.passed:
            return "xpassed" if xfail else "passed"
        if report.skipped:
            return "xfailed" if xfail else "skipped"
        return "failed"
    if report.failed:
        return "error"
    return "skipped" if report.skipped else None


def _first_line(report: pytest.TestReport) -> str:
    """The exception line of a failure (``E   ...``), or the reason of a skip."""
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr or getattr(report, "wasxfail", ""))
    return text.strip().split("\n")[0][:300]


def pytest_configure(config: pytest.Config) -> None:
    path = os.environ.get("PEFT_SUITE_OUTCOMES")
    if path:
        config.pluginmanager.register(_Recorder(path), "peft_suite_recorder")
