"""Record files, read and checked in one place: a JSON list of records, or JSON Lines (one record per line).

LLM-Adapters' data (``test.json``, ``commonsense_170k.json``), the paper's evaluation output
(``experiment/*.json``), saved generations and lm-eval's ``samples_*.jsonl`` all come this way. Every error
names the file, where in it (``line 26`` of a JSON Lines file, ``record 3`` of a JSON list) and the field,
so that a user can open the file at that place.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import DataError, MissingFileError

_FORMATS = "a JSON list of records, or JSON Lines (one record per line) in a .jsonl file"


def located_records(path: Path) -> list[tuple[str, Any]]:
    """Each record of the file with where it is: ``"<path>, line 26"`` (JSON Lines) or ``"<path>, record 3"``."""
    text = _read_text(path)
    if path.suffix == ".jsonl":
        return [
            (f"{path}, line {number}", _parse(line, path, number))
            for number, line in enumerate(text.splitlines(), start=1)
            if line.strip()
        ]
    records = _parse(text, path)
    if not isinstance(records, list):
        raise DataError(f"{path} holds a JSON {type(records).__name__}, not a list of records; expected {_FORMATS}")
    return [(f"{path}, record {i}", record) for i, record in enumerate(records)]


def read_records(path: Path) -> list:
    """The records of a JSON list file, or of a JSON Lines file (``.jsonl``), in order."""
    return [record for _, record in located_records(path)]


def _read_text(path: Path) -> str:
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a file. Pass the record file itself ({_FORMATS}).")
    if not path.exists():
        raise MissingFileError(f"No file {path}. Pass an existing record file ({_FORMATS}).")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason}); expected {_FORMATS}") from exc


def _parse(text: str, path: Path, line: int | None = None) -> Any:
    """``json.loads(text)``; errors name the file line (for a JSON Lines line, ``line``, not the decoder's 1)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {line} column {exc.colno}" if line is not None else f"line {exc.lineno} column {exc.colno}"
        hint = " (one record per line? Name the file .jsonl)" if line is None and exc.msg == "Extra data" else ""
        raise DataError(f"{path} is not valid JSON at {where} ({exc.msg}){hint}; expected {_FORMATS}") from exc


def require_object(record: Any, where: str, fields: tuple[str, ...]) -> Mapping:
    """``record`` itself, when it is a JSON object; else an error that says which fields it should hold."""
    if not isinstance(record, Mapping):
        raise DataError(f"{where}: is a JSON {_json_type(record)}, expected an object with {', '.join(fields)}")
    return record


def require_field(record: Mapping, field: str, kind: type | tuple[type, ...], where: str, needed: str = "") -> Any:
    """``record[field]`` when present and of type ``kind``; a missing field and a wrong type are told apart.

    ``needed`` says what the record is for, e.g. "each record needs answer, output_pred".
    """
    suffix = f" ({needed})" if needed else ""
    if field not in record:
        raise DataError(f"{where}: has no field '{field}'{suffix}")
    value = record[field]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DataError(
            f"{where}: field '{field}' is a JSON {_json_type(value)} ({_short(value)}), expected {_kind_name(kind)}"
            f"{suffix}"
        )
    return value


def optional_texts(record: Mapping, field: str, where: str) -> list[str] | None:
    """``record[field]`` as a list of strings, None when absent or null; anything else is a wrong type."""
    value = record.get(field)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise DataError(
            f"{where}: field '{field}' must be a list of strings (the answer texts in label order), not {_short(value)}"
        )
    return value


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        list: "an array",
        dict: "an object",
        Mapping: "an object",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _short(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."
