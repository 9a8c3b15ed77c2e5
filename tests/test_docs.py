"""The README and the pages under docs/: short enough to read, links that resolve, commands that exist.

Every ``dora`` command that a page shows in a shell block names a real subcommand and only options that the
subcommand's own ``--help`` lists; the runs themselves are tested where each feature is.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
from helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_BLOCK = re.compile(r"```(?:bash|sh|console)\n(.*?)```", re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page) -> set[str]:
    body = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {_anchor(m.group(1)) for m in re.finditer(r"^#+ (.*)$", body, re.M)}


def _dora_commands() -> list[tuple[str, list[str]]]:
    commands = []
    for page in PAGES:
        for block in SHELL_BLOCK.findall(page.read_text(encoding="utf-8")):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" # ")[0].strip().removeprefix("$ ")
                for part in re.split(r"&&|\|", line):
                    words = shlex.split(part.strip(), comments=True) if part.strip() else []
                    if words[:1] == ["dora"] and len(words) > 1:
                        commands.append((page.name, words[1:]))
    return commands


def test_readme_is_read_in_five_minutes():
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 250, f"README.md has {lines} lines; move details into a page under docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(target)
    assert not broken, f"{page.name}: links to nothing: {broken}"


def test_pages_show_dora_commands():
    assert len(_dora_commands()) >= 20  # the parser below must see the pages' commands, not an empty list


def test_every_documented_dora_command_and_option_exists():
    from dora_plugins.cli import COMMANDS

    by_command: dict[str, list[tuple[str, list[str]]]] = {}
    for page, words in _dora_commands():
        assert words[0] in COMMANDS, f"{page}: 'dora {' '.join(words)}' names no subcommand"
        by_command.setdefault(words[0], []).append((page, words))
    unknown = []
    for name, uses in by_command.items():
        listed = set()
        for help_flag in ("--help", "--help-all") if name == "sft" else ("--help",):  # sft: common options, all
            command = [sys.executable, "-m", "dora_plugins", name, help_flag]
            done = subprocess.run(command, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
            listed |= set(re.findall(r"--[\w-]+", done.stdout))
        for page, words in uses:
            for word in words[1:]:
                option = word.split("=")[0]
                if option.startswith("--") and option not in listed:
                    unknown.append(f"{page}: dora {name} {option}")
    assert not unknown, f"options that the command's help does not list: {unknown}"
