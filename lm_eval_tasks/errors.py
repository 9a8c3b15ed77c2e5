"""Show a user error of our tasks (a missing data folder, an empty file, an offline dataset) as one message.

The ``lm_eval`` command catches nothing: an exception raised while a task loads its data reaches the
interpreter, which prints every frame of lm-eval, datasets and ours (about 60 lines) above the one
line that says what to do. :func:`show_user_errors_briefly` chains ``sys.excepthook`` so that an
uncaught :class:`dora_plugins.errors.DoraError` prints ``lm_eval: error: <message>`` and a hint
instead, as the ``dora`` command does; ``DORA_DEBUG=1`` keeps the traceback. Every other exception,
and any error a caller catches, is untouched.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType

from dora_plugins.errors import DoraError

DEBUG_HINT = "(dora-plugins task; set DORA_DEBUG=1 to see the traceback)"


def show_user_errors_briefly() -> None:
    """Install the excepthook of the module docstring, once."""
    if getattr(sys.excepthook, "shows_dora_errors", False):
        return
    previous = sys.excepthook

    def excepthook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        if isinstance(error, DoraError) and os.environ.get("DORA_DEBUG", "") in ("", "0"):
            print(f"lm_eval: error: {error}\n{DEBUG_HINT}", file=sys.stderr)
        else:
            previous(kind, error, tb)

    excepthook.shows_dora_errors = True  # type: ignore[attr-defined]
    sys.excepthook = excepthook
