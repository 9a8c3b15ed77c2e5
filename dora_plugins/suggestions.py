"""The "Did you mean ...?" hint of every error message about an unknown name."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(value: str, known: Iterable[str], *, naming_value: bool = False) -> str:
    """`` Did you mean 'x'?`` for the known name closest to ``value`` (ignoring case), or "" when none is close.

    ``naming_value`` adds `` for 'value'``, for messages that list several unknown names.
    """
    by_lower = {name.lower(): name for name in known}
    close = difflib.get_close_matches(value.lower(), list(by_lower), n=1)
    if not close:
        return ""
    about = f" for '{value}'" if naming_value else ""
    return f" Did you mean '{by_lower[close[0]]}'{about}?"
