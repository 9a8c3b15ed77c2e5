"""The eight commonsense benchmarks of the DoRA paper, as LLM-Adapters builds their instructions.

``from_hf`` turns a row of the canonical Hugging Face dataset into the instruction and answer
that LLM-Adapters' ``dataset/<benchmark>/test.json`` holds, byte for byte (Hu et al. 2023,
AGI-Edgerunners/LLM-Adapters; used unchanged by NVlabs/DoRA). ``load_llm_adapters`` reads such
a ``test.json`` directly, for offline and exact reproduction of the paper's runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError
from .records import read_records

ITEM_FIELDS = ("instruction", "input", "output", "answer")
FORMAT_PREFIX = "Answer format: "


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: its answer labels in order, its Hugging Face source, its row converter, and its names.

    ``task`` and ``title`` are the one place that names a benchmark outside this package: the lm-eval
    task (``dora_siqa``; its log-likelihood twins are :attr:`mc_task` and :attr:`text_task`) and the column
    of the paper's table 1 (``SIQA``). A plugin's benchmark without an lm-eval task leaves ``task`` empty; its title
    defaults to its name.
    """

    name: str  # the LLM-Adapters folder name, e.g. "ARC-Easy"
    description: str
    labels: tuple[str, ...]  # every label an item may have, in order, e.g. ("answer1", ..., "answer5")
    hf_path: str
    hf_name: str | None
    hf_split: str
    to_item: Callable[[Mapping], dict]  # HF row -> {"instruction", "answer", "options"}
    task: str = ""  # the lm-eval generation task, e.g. "dora_arc_easy"; "" when there is none
    title: str = ""  # the column title in the paper's table, e.g. "ARC-e"; "" means the name

    def __post_init__(self) -> None:
        if not self.title:
            object.__setattr__(self, "title", self.name)

    @property
    def mc_task(self) -> str:
        """The lm-eval log-likelihood task on the same items (``dora_arc_easy_mc``), or "" without a task."""
        return f"{self.task}_mc" if self.task else ""

    @property
    def text_task(self) -> str:
        """The lm-eval option-text task on the same items (``dora_arc_easy_text``), or "" without a task."""
        return f"{self.task}_text" if self.task else ""


def _boolq(row: Mapping) -> dict:
    instruction = (
        f"Please answer the following question with true or false, question: {row['question']}?"
        "\n\nAnswer format: true/false"
    )
    return {"instruction": instruction, "answer": "true" if row["label"] else "false", "options": ["true", "false"]}


def _piqa(row: Mapping) -> dict:
    options = [row["sol1"], row["sol2"]]
    instruction = (
        f"Please choose the correct solution to the question: {row['goal']}\n\n"
        f"Solution1: {options[0]}\n\nSolution2: {options[1]}\n\nAnswer format: solution1/solution2"
    )
    return {"instruction": instruction, "answer": f"solution{int(row['label']) + 1}", "options": options}


def _numbered(prefix: str, options: list[str], separator: str = " ") -> str:
    """``Answer1: a Answer2: b`` for prefix "Answer"."""
    return separator.join(f"{prefix}{i}: {text}" for i, text in enumerate(options, start=1))


def _answer_format(label: str, count: int) -> str:
    return "Answer format: " + "/".join(f"{label}{i}" for i in range(1, count + 1))


def _social_i_qa(row: Mapping) -> dict:
    options = [row["answerA"], row["answerB"], row["answerC"]]
    instruction = (
        f"Please choose the correct answer to the question: {row['context']} {row['question']}\n\n"
        f"{_numbered('Answer', options)}\n\n{_answer_format('answer', 3)}"
    )
    return {"instruction": instruction, "answer": f"answer{int(row['label'])}", "options": options}


def _hellaswag(row: Mapping) -> dict:
    options = list(row["endings"])
    instruction = (
        f"Please choose the correct ending to complete the given sentence: {row['activity_label']}: {row['ctx']}\n\n"
        f"{_numbered('Ending', options)}\n\n{_answer_format('ending', len(options))}"
    )
    return {"instruction": instruction, "answer": f"ending{int(row['label']) + 1}", "options": options}


def _winogrande(row: Mapping) -> dict:
    options = [row["option1"], row["option2"]]
    instruction = (
        "Please choose the correct answer to fill in the blank to complete the given sentence: "
        f"{row['sentence']}\n\n{_numbered('Option', options)} {_answer_format('option', 2)}"
    )
    return {"instruction": instruction, "answer": f"option{int(row['answer'])}", "options": options}


def _multiple_choice(question_field: str) -> Callable[[Mapping], dict]:
    """ARC and OpenBookQA: ``choices{text[], label[]}`` and an ``answerKey`` among the labels."""

    def to_item(row: Mapping) -> dict:
        options, keys = list(row["choices"]["text"]), list(row["choices"]["label"])
        if row["answerKey"] not in keys:
            raise ValueError(f"answerKey {row['answerKey']!r} is not one of choices.label {keys}")
        instruction = (
            f"Please choose the correct answer to the question: {row[question_field]}\n\n"
            f"{_numbered('Answer', options)}\n\n{_answer_format('answer', len(options))}"
        )
        return {"instruction": instruction, "answer": f"answer{keys.index(row['answerKey']) + 1}", "options": options}

    return to_item


def _labels(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, count + 1))


BENCHMARKS = (
    Benchmark("boolq", "BoolQ yes/no questions, without the passage", ("true", "false"),
              "aps/super_glue", "boolq", "validation", _boolq,
              task="dora_boolq", title="BoolQ"),
    Benchmark("piqa", "PIQA physical commonsense, 2 solutions", _labels("solution", 2),
              "baber/piqa", None, "validation", _piqa,
              task="dora_piqa", title="PIQA"),
    Benchmark("social_i_qa", "Social IQa social commonsense, 3 answers", _labels("answer", 3),
              "lighteval/siqa", None, "validation", _social_i_qa,
              task="dora_siqa", title="SIQA"),
    Benchmark("hellaswag", "HellaSwag sentence endings, 4 endings", _labels("ending", 4),
              "Rowan/hellaswag", None, "validation", _hellaswag,
              task="dora_hellaswag", title="HellaSwag"),
    Benchmark("winogrande", "WinoGrande (xl) fill in the blank, 2 options", _labels("option", 2),
              "allenai/winogrande", "winogrande_xl", "validation", _winogrande,
              task="dora_winogrande", title="WinoGrande"),
    Benchmark("ARC-Easy", "ARC Easy science questions, 3 to 5 answers", _labels("answer", 5),
              "allenai/ai2_arc", "ARC-Easy", "test", _multiple_choice("question"),
              task="dora_arc_easy", title="ARC-e"),
    Benchmark("ARC-Challenge", "ARC Challenge science questions, 3 to 5 answers", _labels("answer", 5),
              "allenai/ai2_arc", "ARC-Challenge", "test", _multiple_choice("question"),
              task="dora_arc_challenge", title="ARC-c"),
    Benchmark("openbookqa", "OpenBookQA science questions, 4 answers", _labels("answer", 4),
              "allenai/openbookqa", "main", "test", _multiple_choice("question_stem"),
              task="dora_openbookqa", title="OBQA"),
)  # fmt: skip


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark called ``name`` (built-in or from a plugin)."""
    from .plugins import lookup

    return lookup("benchmark", name).value


def from_hf(benchmark: str, row: Mapping, index: int | None = None) -> dict:
    """LLM-Adapters' ``{"instruction", "answer", "options"}`` for one row of the benchmark's HF dataset.

    ``options`` are the answer texts in label order. ``index`` (the row number) only improves error messages.
    """
    spec = get_benchmark(benchmark)
    try:
        return spec.to_item(row)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        where = f"row {index}" if index is not None else "a row"
        problem = f"has no field {exc}" if isinstance(exc, KeyError) else f"is invalid: {type(exc).__name__}: {exc}"
        keys = sorted(row) if isinstance(row, Mapping) else type(row).__name__
        raise DataError(
            f"{benchmark}: {where} {problem}. Rows must follow the schema of "
            f"{spec.hf_path} ({spec.hf_name or 'default'}, {spec.hf_split}); this row has: {keys}"
        ) from exc


def options_from_instruction(instruction: str) -> list[str]:
    """The answer texts listed in an LLM-Adapters instruction (``Answer1: ...``), in label order.

    The labels come from the instruction's ``Answer format: a/b/c`` line. Labels without a number
    (``true/false``) are their own texts. Returns [] when the instruction has no such list.
    """
    fmt = instruction.rfind(FORMAT_PREFIX)
    if fmt < 0:
        return []
    words = instruction[fmt + len(FORMAT_PREFIX) :].split()
    labels = words[0].split("/") if words else []
    prefix = labels[0].rstrip("0123456789") if labels else ""
    if not prefix or prefix == labels[0]:
        return labels
    body = instruction[:fmt]
    start = body.rfind(f"\n\n{prefix.capitalize()}1: ")
    if start < 0:
        return []
    markers = [f"{prefix.capitalize()}{i}: " for i in range(1, len(labels) + 1)]
    starts, position = [], start
    for marker in markers:
        position = body.find(marker, position)
        if position < 0:
            return []
        starts.append(position)
        position += len(marker)
    ends = starts[1:] + [len(body)]
    return [body[s + len(m) : e].strip() for s, m, e in zip(starts, markers, ends, strict=True)]


def load_llm_adapters(data_dir: str | Path, benchmark: str) -> list[dict]:
    """The items of LLM-Adapters' ``<data_dir>/<benchmark>/test.json``, each with ``options`` added.

    Each record must hold ``instruction``, ``input``, ``output`` and ``answer``; anything else fails
    with a :class:`DataError` that names the file, the record and the field.
    """
    path = Path(data_dir) / benchmark / "test.json"
    _check_data_file(path, benchmark)
    records = read_records(path)
    items = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(f"{path}: record {i} is a {type(record).__name__}, expected an object with {ITEM_FIELDS}")
        for field in ITEM_FIELDS:
            if not isinstance(record.get(field), str):
                problem = "has no field" if field not in record else "has a non-string field"
                raise DataError(f"{path}: record {i} {problem} '{field}'; every record needs {', '.join(ITEM_FIELDS)}")
        items.append({**record, "options": options_from_instruction(record["instruction"])})
    return items


def _check_data_file(path: Path, benchmark: str) -> None:
    if not path.parent.parent.is_dir():
        raise DataError(
            f"Data folder '{path.parent.parent}' does not exist. Pass LLM-Adapters' dataset/ folder, "
            f"the one that holds {benchmark}/test.json."
        )
    if not path.is_file():
        present = sorted(p.name for p in path.parent.parent.iterdir() if (p / "test.json").is_file())
        raise DataError(
            f"No file {path}: the data folder needs {benchmark}/test.json. Folders with a test.json: "
            f"{', '.join(present) or 'none'}"
        )
