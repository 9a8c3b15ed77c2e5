"""PEFT's own DoRA tests as our regression test: each runs once with stock PEFT and once routed to our layer.

    python tools/peft_suite.py                        # every DoRA-related test of the installed peft's suite
    python tools/peft_suite.py --subset ci            # what CI runs (peft_suite_plugin.SUBSETS says what and why)
    python tools/peft_suite.py -k low_cpu_mem_usage   # only the DoRA-related tests that match a pytest -k expression

It downloads the sdist of the installed peft version from the package index (``pip download --no-deps
--no-binary :all: peft==X``, kept in ``--cache-dir``), unpacks its ``tests/``, runs the DoRA-related tests
(``peft_suite_plugin.is_dora_test``) of every test module that mentions ``use_dora``, first stock, then with
``peft_suite_route`` loaded (``dora_plugins.route_peft(True)``), and compares the outcomes test by test.
Exit status 1 when a test that passes stock does not pass routed (unless INTENTIONAL_DIFFERENCES names it),
or when the runs did not exercise the layers they should; 2 when the suite cannot be fetched or run.
Tests that cannot run here (hub downloads fail fast under HF_HUB_OFFLINE=1; GPU-only tests skip) fail or
skip in both runs and are reported, not excluded. The test modules need a few packages that dora-plugins
does not (``tools/peft_suite_requirements.txt``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from peft_suite_plugin import SUBSETS, in_subset
from peft_suite_report import Comparison, Outcome, compare, format_report, read_outcomes
from peft_suite_sdist import unpack_tests

from dora_plugins.errors import DoraError

TOOLS = Path(__file__).resolve().parent
TEST_REQUIREMENTS = TOOLS / "peft_suite_requirements.txt"

# Tests whose routed failure is by design, each with the reason. Nothing else may fail routed.
INTENTIONAL_DIFFERENCES = {
    "tests/test_helpers.py::TestDoraCaching::test_dora_caching_linear": (
        "checks PEFT's DoraCaching switch (ENABLE_DORA_CACHING) through the `_dora_cache` dicts of PEFT's DoRA "
        "layers; our layer caches on its own, whatever the switch says, and has no such dict"
    ),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python tools/peft_suite.py", description=__doc__.split("\n")[0])
    parser.add_argument("--subset", choices=sorted(SUBSETS), default="full", help="which tests to run (default full)")
    parser.add_argument("-k", dest="keyword", help="also keep only the tests that match this pytest -k expression")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dora-plugins" / "peft-suite",
        help="where the sdist, its unpacked tests and the outcomes and logs of the runs are kept",
    )
    return parser.parse_args(argv)


def check_test_requirements() -> None:
    """PEFT's test modules import these at module level; without them pytest stops while collecting."""
    lines = TEST_REQUIREMENTS.read_text(encoding="utf-8").splitlines()
    names = [line.split("#")[0].strip() for line in lines]
    missing = [name for name in names if name and importlib.util.find_spec(name) is None]
    if missing:
        raise DoraError(
            f"PEFT's test modules import {', '.join(missing)}, which is not installed. "
            f"Install what they need with: python -m pip install -r {TEST_REQUIREMENTS}"
        )


def dora_test_modules(suite: Path) -> list[str]:
    """The test modules that mention ``use_dora``, the only way a test asks for DoRA."""
    modules = [p for p in sorted((suite / "tests").glob("test_*.py")) if "use_dora" in p.read_text(encoding="utf-8")]
    if not modules:
        raise DoraError(f"No test module in {suite / 'tests'} mentions use_dora: is this PEFT's test suite?")
    return [str(p.relative_to(suite)) for p in modules]


def run_pytest(suite: Path, modules: list[str], routed: bool, args: argparse.Namespace) -> dict[str, Outcome]:
    """Run the selected tests once, stock or routed; outcomes and log go to ``suite/results/``."""
    name = "routed" if routed else "stock"
    results = suite / "results"
    results.mkdir(exist_ok=True)
    outcomes, log = results / f"{name}.jsonl", results / f"{name}.log"
    outcomes.unlink(missing_ok=True)
    env = {key: value for key, value in os.environ.items() if key != "DORA_PLUGINS_ROUTE"}
    if not routed:
        env["DORA_PLUGINS_ROUTE"] = "0"  # no automatic routing either: this run is stock PEFT
    env.update(
        # this checkout's dora_plugins, whichever one is installed
        PYTHONPATH=os.pathsep.join(filter(None, [str(TOOLS), str(TOOLS.parent), os.environ.get("PYTHONPATH")])),
        PEFT_SUITE_OUTCOMES=str(outcomes),
        PEFT_SUITE_SUBSET=args.subset,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",  # the same plugins wherever it runs
    )
    env.setdefault("OMP_NUM_THREADS", "1")  # the models are tiny: one thread is fastest on a shared machine
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "peft_suite_plugin"]
    command += ["-p", "peft_suite_route"] if routed else []
    command += ["-k", args.keyword] if args.keyword else []
    # addopts= drops PEFT's coverage options (pytest-cov is not needed); its markers and warning filters stay.
    # --tb=native: pytest's own tracebacks through torch's meta kernels cost ~2 s of CPU per failure
    command += ["-o", "addopts=", "--tb=native", "-q", *modules]
    print(f"{name} run: started, log in {log}", flush=True)
    start, cpu = time.monotonic(), _children_cpu_seconds()
    with open(log, "w", encoding="utf-8") as out:
        status = subprocess.run(command, cwd=suite, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    wall, cpu = time.monotonic() - start, _children_cpu_seconds() - cpu
    print(f"{name} run: {wall:.0f} s ({cpu:.0f} s of CPU), pytest exit status {status}", flush=True)
    if status not in (0, 1):  # 0: all passed, 1: some failed; anything else: the run itself broke
        tail = "\n".join(log.read_text(encoding="utf-8").splitlines()[-20:])
        raise DoraError(f"pytest could not run PEFT's tests ({name} run, exit status {status}); see {log}:\n{tail}")
    return read_outcomes(outcomes)


def _children_cpu_seconds() -> float:
    """CPU time of finished child processes: on a shared machine the wall time says little on its own."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def check_subsets(comparison: Comparison) -> None:
    """After a full run: every subset must keep each test in which the routed run created one of our layers."""
    for subset in SUBSETS:
        left_out = [o.id for o in comparison.routed.values() if o.uses(ours=True) and not in_subset(o.id, subset)]
        if left_out:
            comparison.problems.append(
                f"subset {subset!r} leaves out {len(left_out)} tests that create our layer (first: {left_out[0]}): "
                "update SUBSETS in tools/peft_suite_plugin.py"
            )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_test_requirements()
        version = importlib.metadata.version("peft")
        suite = unpack_tests(version, args.cache_dir)
        modules = dora_test_modules(suite)
        print(f"peft {version}: the DoRA-related tests of {', '.join(m.split('/')[-1] for m in modules)}")
        stock = run_pytest(suite, modules, routed=False, args=args)
        routed = run_pytest(suite, modules, routed=True, args=args)
    except DoraError as error:
        print(f"peft_suite: error: {error}", file=sys.stderr)
        return 2
    comparison = compare(stock, routed, INTENTIONAL_DIFFERENCES)
    if args.subset == "full" and not args.keyword:
        check_subsets(comparison)
    print(f"\nsubset {args.subset}{f', -k {args.keyword}' if args.keyword else ''}")
    print(format_report(comparison))
    return 1 if comparison.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
