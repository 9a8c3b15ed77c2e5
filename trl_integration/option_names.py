"""Every option of ``dora sft``, named without importing trl, transformers or torch.

``dora sft`` parses with ``trl.TrlParser`` over four dataclasses, and importing them costs torch,
transformers, peft and trl: 7 s of CPU, 20-35 s on a busy machine. To answer ``--help`` and reject a
misspelt option or YAML key in a fraction of a second, the fields are read from the installed source files
with :mod:`ast`, and turned into options as ``HfArgumentParser`` does: a field ``name`` gives ``--name``
(and ``--na-me`` for a name with underscores), a bool that defaults to ``True`` also ``--no_name``, and the
``aliases`` of its metadata. ``tests/trl_tests/test_sft_fast_cli.py`` checks that the result equals the full
parser's options. Where a source cannot be read (an unusual install), :func:`sft_fields` returns None and
the callers fall back to the full parser.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The dataclasses of the dora sft parser, each base class before the class that overrides its fields:
# (top-level package, file inside it, class). ScriptArguments, SFTConfig, ModelConfig, then ours.
SOURCES = (
    ("trl", "scripts/utils.py", "ScriptArguments"),
    ("transformers", "training_args.py", "TrainingArguments"),
    ("trl", "trainer/base_config.py", "_BaseConfig"),
    ("trl", "trainer/sft_config.py", "SFTConfig"),
    ("trl_integration", "sft_config.py", "DoraSFTConfig"),
    ("trl", "trainer/model_config.py", "ModelConfig"),
    ("trl_integration", "arguments.py", "DoraArguments"),
)


@dataclass(frozen=True)
class FieldOptions:
    """One dataclass field as the parser sees it: its ``dest`` and the option strings that set it."""

    dest: str
    options: tuple[str, ...]


def option_strings(fields: dict[str, FieldOptions]) -> dict[str, str]:
    """Every option string (``--learning_rate``, ``--learning-rate``, ``--no_...``) -> the field it sets."""
    return {option: field.dest for field in fields.values() for option in field.options}


@functools.cache
def sft_fields() -> dict[str, FieldOptions] | None:
    """The fields of the ``dora sft`` parser by name, read from source; None where a source cannot be read."""
    fields: dict[str, FieldOptions] = {}
    for package, relative, name in SOURCES:
        path = _package_dir(package)
        tree = _parse(path / relative) if path else None
        found = _class_fields(tree, name) if tree else None
        if found is None:
            return None
        fields.update(found)  # a subclass's declaration replaces its base's
    return fields


def _package_dir(package: str) -> Path | None:
    """The folder of an installed top-level package, found without importing it."""
    if package == "trl_integration":
        return HERE
    spec = importlib.util.find_spec(package)  # a top-level name: nothing is imported
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None


def _parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None


def _class_fields(tree: ast.Module, name: str) -> dict[str, FieldOptions] | None:
    """The init fields of class ``name`` in ``tree`` (annotated assignments of its body), in order."""
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)
    if node is None:
        return None
    fields = {}
    for statement in node.body:
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        annotation = ast.unparse(statement.annotation)
        call = statement.value if isinstance(statement.value, ast.Call) else None
        keywords = {k.arg: k.value for k in call.keywords if k.arg} if call else {}
        if "ClassVar" in annotation or _literal(keywords.get("init"), True) is False:
            continue
        field_name = statement.target.id
        default = _literal(keywords.get("default"), None) if call else _literal(statement.value, None)
        metadata = _literal(keywords.get("metadata"), {}) or {}
        fields[field_name] = FieldOptions(field_name, _options(field_name, annotation, default, metadata))
    return fields


def _options(name: str, annotation: str, default, metadata: dict) -> tuple[str, ...]:
    options = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    aliases = metadata.get("aliases", []) if isinstance(metadata, dict) else []
    options += [aliases] if isinstance(aliases, str) else list(aliases)
    if default is True and annotation.replace(" ", "") in ("bool", "bool|None", "Optional[bool]", "None|bool"):
        options += [f"--no_{name}", f"--no-{name.replace('_', '-')}"]
    return tuple(options)


def _literal(node: ast.AST | None, fallback):
    """The value of a literal expression; ``fallback`` for anything else (a name, a call, a lambda)."""
    if node is None:
        return fallback
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return fallback
