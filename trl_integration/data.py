"""LLM-Adapters records (``instruction``, ``input``, ``output``) -> tokenized examples for ``SFTTrainer``.

Tokenisation follows NVlabs/DoRA ``commonsense_reasoning/finetune.py`` (``tokenize`` and
``generate_and_tokenize_prompt``): the train text of :func:`dora_plugins.prompts.train_text`,
tokenized in one piece and cut at ``cutoff_len`` tokens; EOS appended when the result is shorter
than ``cutoff_len``; labels equal to the input IDs (``train_on_inputs=True``, the paper's
setting), or with the prompt tokens set to -100 (``train_on_inputs=False``), the prompt being the
text with an empty output tokenized on its own. SFTTrainer takes the ``input_ids``/``labels``
columns as they are.
"""

from __future__ import annotations

from pathlib import Path

from dora_plugins.errors import DataError, MissingFileError
from dora_plugins.prompts import train_text
from dora_plugins.records import read_records

REQUIRED_FIELDS = ("instruction", "output")
IGNORE_INDEX = -100  # the label that PyTorch's cross-entropy (and transformers) skip


def load_records(source: str, config: str | None = None, split: str = "train") -> list[dict]:
    """The records of a local LLM-Adapters JSON/JSONL file, or of a hub dataset id or local dataset folder
    (loaded with ``datasets.load_dataset``), checked field by field."""
    path = Path(source).expanduser()
    if _is_file_source(path):
        records = _read_file(path)
    else:
        records = _read_hub(source, config, split)
    check_records(records, source)
    return records


def check_dataset_source(source: str) -> None:
    """Raise a :class:`MissingFileError` when ``source`` names a JSON file that is not there (cheap: reads nothing)."""
    path = Path(source).expanduser()
    if _is_file_source(path) and not path.is_file():
        _read_file(path)


def _is_file_source(path: Path) -> bool:
    return path.suffix in (".json", ".jsonl") or path.is_file()


def _read_file(path: Path) -> list[dict]:
    if not path.is_file():
        raise MissingFileError(
            f"Dataset file {path} does not exist. Pass an LLM-Adapters JSON file (a list of records with "
            "'instruction', 'input' and 'output', e.g. commonsense_170k.json) or a hub dataset id."
        )
    return read_records(path)


def _read_hub(name: str, config: str | None, split: str) -> list[dict]:
    """``datasets.load_dataset(name)`` with its failures (not found, no network, offline) as one short message."""
    from datasets import load_dataset

    try:
        return load_dataset(name, name=config, split=split).to_list()
    except (OSError, ValueError) as exc:  # ConnectionError and FileNotFoundError are OSErrors
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
        offline = (
            " Without network access (or with HF_HUB_OFFLINE=1) a hub dataset must already be in the local cache."
            if isinstance(exc, ConnectionError)
            else ""
        )
        raise MissingFileError(
            f"Could not load dataset '{name}' (config {config}, split {split}): {reason}.{offline} Pass an "
            "LLM-Adapters JSON file (a list of records with 'instruction', 'input' and 'output') or a hub dataset "
            "id with those columns."
        ) from exc


def check_records(records: list, source: str) -> None:
    """Raise a ``DataError`` naming ``source`` and the first record that is not a usable LLM-Adapters record."""
    if not records:
        raise DataError(f"Dataset {source} has no records.")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(f"Dataset {source}, record {index}: expected an object, got {type(record).__name__}.")
        missing = [key for key in REQUIRED_FIELDS if not isinstance(record.get(key), str)]
        if missing:
            raise DataError(
                f"Dataset {source}, record {index} lacks the text field(s) {missing} (it has {sorted(record)}). "
                "Every record needs 'instruction' and 'output' strings; 'input' is optional."
            )
        if not isinstance(record.get("input", ""), str):
            raise DataError(f"Dataset {source}, record {index}: 'input' must be a string.")


def check_val_set_size(val_set_size: int, count: int) -> None:
    """Raise a ``DataError`` unless ``val_set_size`` leaves at least one of ``count`` records for training."""
    if not 0 <= val_set_size < count:
        raise DataError(
            f"val_set_size={val_set_size} must be in [0, {count}) for a dataset of {count} records; "
            "use 0 to train on everything."
        )


def tokenize_record(record: dict, tokenizer, cutoff_len: int = 256, train_on_inputs: bool = True) -> dict:
    """``{"input_ids", "labels"}`` of one record, exactly as the paper's ``finetune.py`` builds them."""
    text = train_text(record["instruction"], record["output"], record.get("input", ""))
    input_ids = _tokenize(text, tokenizer, cutoff_len, add_eos=True)
    labels = list(input_ids)
    if not train_on_inputs:
        prompt = train_text(record["instruction"], "", record.get("input", ""))
        prompt_len = len(_tokenize(prompt, tokenizer, cutoff_len, add_eos=False))
        labels = [IGNORE_INDEX] * prompt_len + labels[prompt_len:]
    return {"input_ids": input_ids, "labels": labels[: len(input_ids)]}


def _tokenize(text: str, tokenizer, cutoff_len: int, add_eos: bool) -> list[int]:
    input_ids = tokenizer(text, truncation=True, max_length=cutoff_len, padding=False)["input_ids"]
    eos = tokenizer.eos_token_id
    if add_eos and eos is not None and len(input_ids) < cutoff_len and (not input_ids or input_ids[-1] != eos):
        input_ids = input_ids + [eos]
    return input_ids


def sft_datasets(
    records: list[dict],
    tokenizer,
    cutoff_len: int = 256,
    train_on_inputs: bool = True,
    val_set_size: int = 0,
    seed: int = 42,
):
    """(train, eval or None) ``datasets.Dataset`` objects of tokenized records; ``val_set_size`` held out."""
    from datasets import Dataset

    check_val_set_size(val_set_size, len(records))
    dataset = Dataset.from_list([tokenize_record(r, tokenizer, cutoff_len, train_on_inputs) for r in records])
    if not val_set_size:
        return dataset, None
    split = dataset.train_test_split(test_size=val_set_size, shuffle=True, seed=seed)  # as finetune.py, seed 42
    return split["train"], split["test"]
