"""Start-up cost of the lm-eval hook: what ``dora_plugins_lm_eval.pth`` adds to every Python start.

Runs ``python -X importtime -c pass`` --reps times and reads the hook's line (``lm_eval_tasks.startup``, with
its package) next to the sum of all top-level imports of the same start. Prints the median of each, their
ratio, and whether the hook stayed under the targets: a share of the start-up imports and a generous bound.
With PYTHONDONTWRITEBYTECODE=1 every start compiles the hook from source, which is the slow case.

    python -m perf.startup_cost
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys

HOOK = "lm_eval_tasks.startup"
SHARE_TARGET = 0.10  # of the imports a bare interpreter start makes anyway
BOUND_MS = 5.0  # generous: about 0.3 ms with bytecode, 2 ms compiling from source on a busy CPU
LINE = re.compile(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)")


def one_start() -> tuple[int, int]:
    """(hook, all top-level imports), in microseconds, of one interpreter start."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True)
    rows = [LINE.fullmatch(line) for line in result.stderr.splitlines()]
    cumulative = [(int(m.group(1)), len(m.group(2)), m.group(3)) for m in rows if m]
    hook = [us for us, _, name in cumulative if name == HOOK]
    if not hook:
        raise SystemExit(f"{HOOK} is not imported at start-up: the hook is not installed (pip install -e .)")
    top = min(depth for _, depth, _ in cumulative)
    return hook[0], sum(us for us, depth, _ in cumulative if depth == top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=21)
    args = parser.parse_args(argv)
    starts = [one_start() for _ in range(args.reps)]
    hook = statistics.median(h for h, _ in starts) / 1e3
    total = statistics.median(t for _, t in starts) / 1e3
    share = statistics.median(h / t for h, t in starts)
    print(f"startup_cost: {args.reps} starts of {sys.executable}")
    print(f"{'hook (ms, median)':<34}{hook:7.3f}  (bound {BOUND_MS:.1f}: {'met' if hook <= BOUND_MS else 'NOT met'})")
    print(f"{'all start-up imports (ms, median)':<34}{total:7.3f}")
    verdict = "met" if share <= SHARE_TARGET else "NOT met"
    print(f"{'hook / start-up imports':<34}{share:7.3f}  (target <= {SHARE_TARGET:.2f}: {verdict})")
    return 0 if hook <= BOUND_MS and share <= SHARE_TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
