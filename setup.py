"""Install lm-eval's startup hook at the top of site-packages; everything else is in pyproject.toml.

lm-eval 0.4.13 does not discover tasks of installed packages, so the wheel ships
``dora_plugins_lm_eval.pth`` (and the PEP 829 ``.start`` file next to it) at the root of
purelib, where ``site`` reads them (see lm_eval_tasks/startup.py). setuptools has no
declarative way to put a file there: a wheel takes it from the root of ``build_lib``, and an
editable wheel from the root of the folder that ``install_lib`` points at while it is built.
``pip uninstall`` removes both files, as they are in the wheel's RECORD.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HOOK_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"
HOOK_FILES = ("dora_plugins_lm_eval.pth", "dora_plugins_lm_eval.start")


class build_py_with_startup_hook(build_py):
    """``build_py`` that also places the startup hook files at the root of the (editable) wheel."""

    def run(self):
        super().run()
        for name in HOOK_FILES:
            self.copy_file(str(HOOK_DIR / name), str(self._hook_root() / name))

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
