"""Install the start-up hooks at the top of site-packages; everything else is in pyproject.toml.

Two hooks run at interpreter start-up: ``dora_plugins_lm_eval.pth`` adds our tasks to lm-eval, which
discovers no tasks of installed packages (see lm_eval_tasks/startup.py), and ``dora_plugins_route.pth``
routes stock DoRA to our layer in the trl command line and lm-eval (see dora_plugins/startup.py). The
wheel ships each ``.pth`` (and the PEP 829 ``.start`` file next to it) at the root of purelib, where
``site`` reads them. setuptools has no
declarative way to put a file there: a wheel takes it from the root of ``build_lib``, and an
editable wheel from the root of the folder that ``install_lib`` points at while it is built.
``pip uninstall`` removes both files, as they are in the wheel's RECORD.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
HOOK_FILES = {
    name: ROOT / package / name
    for package, stem in (("lm_eval_tasks", "dora_plugins_lm_eval"), ("dora_plugins", "dora_plugins_route"))
    for name in (f"{stem}.pth", f"{stem}.start")
}


class build_py_with_startup_hook(build_py):
    """``build_py`` that also places the startup hook files at the root of the (editable) wheel."""

    def run(self):
        super().run()
        for name, source in HOOK_FILES.items():
            self.copy_file(str(source), str(self._hook_root() / name))

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if self.editable_mode:  # the files are not in build_lib, which an editable wheel ignores
            return outputs
        return outputs + [str(self._hook_root() / name) for name in HOOK_FILES]

    def _hook_root(self) -> Path:
        if self.editable_mode:  # setuptools' editable_wheel points install_lib at the unpacked wheel
            return Path(self.get_finalized_command("install").install_lib)
        return Path(self.build_lib)


setup(cmdclass={"build_py": build_py_with_startup_hook})
