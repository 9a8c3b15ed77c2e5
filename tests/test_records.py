"""The one reader of record files and its field checks: every error names the file, the line or record, the field."""

from __future__ import annotations

import json

import pytest

from dora_plugins.errors import DataError, MissingFileError
from dora_plugins.records import (
    located_records,
    optional_texts,
    read_records,
    require_field,
    require_object,
)


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_a_json_list_and_json_lines_with_their_places(tmp_path):
    listed = _write(tmp_path / "a.json", json.dumps([{"x": 1}, {"x": 2}]))
    lines = _write(tmp_path / "a.jsonl", '{"x": 1}\n\n{"x": 2}\n')
    assert read_records(listed) == read_records(lines) == [{"x": 1}, {"x": 2}]
    assert [where for where, _ in located_records(listed)] == [f"{listed}, record 0", f"{listed}, record 1"]
    assert [where for where, _ in located_records(lines)] == [f"{lines}, line 1", f"{lines}, line 3"]


def test_a_bad_json_lines_line_is_reported_with_its_file_line(tmp_path):
    rows = [json.dumps({"answer": "true", "output_pred": "true"})] * 25 + ['{"answer": "true", "output_pred": tru}']
    path = _write(tmp_path / "run.jsonl", "\n".join(rows) + "\n")
    with pytest.raises(DataError) as caught:
        read_records(path)
    assert str(caught.value).startswith(f"{path} is not valid JSON at line 26 column 35 (Expecting value)")


def test_a_bad_json_file_is_reported_with_its_line_and_column(tmp_path):
    path = _write(tmp_path / "a.json", '[\n  {"x": 1},\n  {"x": }\n]')
    with pytest.raises(DataError, match=r"a\.json is not valid JSON at line 3 column 9 \(Expecting value\)"):
        read_records(path)


def test_json_lines_in_a_json_file_get_a_hint(tmp_path):
    path = _write(tmp_path / "a.json", '{"x": 1}\n{"x": 2}\n')
    with pytest.raises(DataError, match=r"at line 2 column 1 \(Extra data\) \(one record per line\? Name"):
        read_records(path)


def test_a_json_file_that_is_not_a_list(tmp_path):
    path = _write(tmp_path / "a.json", '{"answer": "true"}')
    with pytest.raises(DataError, match=r"a\.json holds a JSON dict, not a list of records"):
        read_records(path)


def test_a_folder_is_reported_as_a_folder(tmp_path):
    (tmp_path / "x.json").mkdir()
    with pytest.raises(DataError, match=r"x\.json is a folder, not a file"):
        read_records(tmp_path / "x.json")


def test_a_missing_file(tmp_path):
    with pytest.raises(MissingFileError, match=r"No file .*nope\.json"):
        read_records(tmp_path / "nope.json")


def test_a_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b'[{"x": "\xff"}]')
    with pytest.raises(DataError, match=r"a\.json is not UTF-8 text \(byte 8"):
        read_records(path)


def test_require_object_names_the_place_and_the_fields():
    with pytest.raises(DataError, match=r"^f, line 3: is a JSON array, expected an object with answer, output_pred$"):
        require_object([1], "f, line 3", ("answer", "output_pred"))
    assert require_object({"a": 1}, "f", ("a",)) == {"a": 1}


@pytest.mark.parametrize(
    ("record", "kind", "message"),
    [
        ({}, str, r"^f, record 2: has no field 'answer' \(each record needs answer\)$"),
        ({"answer": None}, str, r"^f, record 2: field 'answer' is a JSON null \(null\), expected a string"),
        ({"answer": 3}, str, r"field 'answer' is a JSON number \(3\), expected a string"),
        ({"answer": True}, int, r"field 'answer' is a JSON boolean \(true\), expected an integer"),
        ({"answer": 2.5}, int, r"field 'answer' is a JSON number \(2.5\), expected an integer"),
        ({"answer": "x" * 80}, int, r"field 'answer' is a JSON string \(\"x{36}\.\.\.\), expected an integer"),
    ],
)
def test_require_field_tells_a_missing_field_from_a_wrong_type(record, kind, message):
    with pytest.raises(DataError, match=message):
        require_field(record, "answer", kind, "f, record 2", "each record needs answer")


def test_require_field_returns_the_value():
    assert require_field({"index": 3}, "index", int, "f") == 3
    assert require_field({"answer": "true"}, "answer", str, "f") == "true"


@pytest.mark.parametrize("value", [[None, "x"], [1, 2], "a b", {"a": 1}])
def test_optional_texts_rejects_anything_but_a_list_of_strings(value):
    with pytest.raises(DataError, match=r"^f, line 1: field 'options' must be a list of strings"):
        optional_texts({"options": value}, "options", "f, line 1")


def test_optional_texts_accepts_absent_null_and_strings():
    assert optional_texts({}, "options", "f") is None
    assert optional_texts({"options": None}, "options", "f") is None
    assert optional_texts({"options": ["a", "b"]}, "options", "f") == ["a", "b"]
