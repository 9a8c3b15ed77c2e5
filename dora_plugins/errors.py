"""The one family of user errors: bad input, a missing file, an unknown name, an output that would destroy data.

Every message names the bad value, what is allowed and the fix. The ``dora`` command catches
:class:`DoraError` once and prints ``dora <command>: error: <message>`` (exit status 2) without a
traceback; anything else is a bug and keeps its traceback. The subclasses also derive from the
built-in exception that Python code would expect (``ValueError``, ``FileNotFoundError``), so that
``except ValueError`` keeps working for library users.
"""

from __future__ import annotations


class DoraError(Exception):
    """A user error whose message says what is wrong and what to do."""


class ConfigError(DoraError, ValueError):
    """An option, preset, recipe or adapter config that cannot be used."""


class DataError(DoraError, ValueError):
    """A data file, record or row that does not have the shape we need; the message names where and what."""


class UnknownNameError(ConfigError, DataError):
    """A preset, benchmark or extractor name that no plugin registered (an option, or a field of a data file)."""


class MissingFileError(DoraError, FileNotFoundError):
    """A file or folder that an input names does not exist."""


class OutputError(DoraError):
    """Writing to an output path would destroy something we did not create."""


class PluginError(DoraError, RuntimeError):
    """Two plugins registered the same name; the message names both."""
