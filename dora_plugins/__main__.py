"""``python -m dora_plugins`` is the ``dora`` command."""

from dora_plugins.cli import run

run()
