"""A meta-path finder that acts right after given modules execute: the base of both start-up hooks.

It answers no import itself: for a watched name it finds the real spec with the rest of ``sys.meta_path`` and
wraps the loader, so that :meth:`AfterImport.loaded` runs once the module has executed; when every watched
module has loaded, the finder leaves ``sys.meta_path``. It imports nothing but ``sys``, so that arming it at
every interpreter start costs nothing measurable.
"""

from __future__ import annotations

import sys


class AfterImport:
    """Subclasses set :attr:`names` and implement :meth:`loaded` (which must not raise)."""

    names: frozenset[str] = frozenset()

    def loaded(self, name: str, module) -> None:
        raise NotImplementedError

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.names:
            return None
        try:
            spec = _real_spec(self, fullname, path, target)
            if spec is not None and hasattr(spec.loader, "exec_module"):
                self._wrap(spec.loader, fullname)
            return spec
        except Exception:  # never break the import we watch
            return None

    def _wrap(self, loader, name: str) -> None:
        run = loader.exec_module

        def exec_module(module):
            run(module)
            self.loaded(name, module)
            if all(watched in sys.modules for watched in self.names):
                sys.meta_path[:] = [f for f in sys.meta_path if f is not self]

        loader.exec_module = exec_module

    @classmethod
    def arm(cls) -> None:
        """Handle the watched modules already loaded; put one finder of this class first on ``sys.meta_path``."""
        finder = cls()
        for name in finder.names:
            if name in sys.modules:
                finder.loaded(name, sys.modules[name])
        armed = any(isinstance(f, cls) for f in sys.meta_path)
        if not armed and not all(name in sys.modules for name in finder.names):
            sys.meta_path.insert(0, finder)


def _real_spec(finder, fullname, path, target):
    """The spec that the rest of ``sys.meta_path`` finds for ``fullname``, as if ``finder`` were not there."""
    for other in list(sys.meta_path):
        find_spec = getattr(other, "find_spec", None)
        if other is finder or find_spec is None:
            continue
        spec = find_spec(fullname, path, target)
        if spec is not None:
            return spec
    return None
