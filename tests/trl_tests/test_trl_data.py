"""LLM-Adapters records -> SFTTrainer examples: exact text, EOS and cutoff, labels mask, bad files."""

from __future__ import annotations

import json

import pytest
from helpers import requires_shared_data, shared_files

from trl_integration.data import IGNORE_INDEX, load_records, sft_datasets, tokenize_record

# finetune.py's generate_prompt, written out: TWO spaces after "request.", 16-space indents, a 16-space blank line.
BOOLQ_0_TEXT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.  \n"
    "\n"
    "                ### Instruction:\n"
    "                Please answer the following question with true or false, question: "
    "do iran and afghanistan speak the same language?\n\nAnswer format: true/false\n"
    "                \n"
    "                ### Response:\n"
    "                the correct answer is true"
)
WITH_INPUT_TEXT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request. \n"
    "\n"
    "                ### Instruction:\n"
    "                Add the numbers.\n"
    "                \n"
    "                ### Input:\n"
    "                2 and 3\n"
    "                \n"
    "                ### Response:\n"
    "                5"
)


def test_train_text_is_finetune_py_byte_for_byte_with_eos_and_full_labels(boolq_tokenizer, boolq_records):
    record = dict(boolq_records[0])
    example = tokenize_record(record, boolq_tokenizer)
    ids = example["input_ids"]
    assert ids[0] == boolq_tokenizer.bos_token_id and ids[-1] == boolq_tokenizer.eos_token_id
    assert boolq_tokenizer.decode(ids[1:-1]) == BOOLQ_0_TEXT
    assert ids == boolq_tokenizer(BOOLQ_0_TEXT)["input_ids"] + [boolq_tokenizer.eos_token_id]
    assert example["labels"] == ids  # train_on_inputs=True: loss on every token, EOS included


def test_record_with_input_uses_the_input_template(boolq_tokenizer, boolq_records):
    record = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}
    ids = tokenize_record(record, boolq_tokenizer)["input_ids"]
    assert boolq_tokenizer.decode(ids[1:-1]) == WITH_INPUT_TEXT


def test_cutoff_truncates_without_eos_and_adds_eos_only_when_shorter(boolq_tokenizer, boolq_records):
    record = dict(boolq_records[0])
    full = boolq_tokenizer(BOOLQ_0_TEXT)["input_ids"]
    cut = tokenize_record(record, boolq_tokenizer, cutoff_len=20)
    assert cut["input_ids"] == full[:20] and cut["labels"] == full[:20]  # cut at 20, no EOS
    exact = tokenize_record(record, boolq_tokenizer, cutoff_len=len(full))
    assert exact["input_ids"] == full  # as long as the cutoff: no room for EOS
    one_more = tokenize_record(record, boolq_tokenizer, cutoff_len=len(full) + 1)
    assert one_more["input_ids"] == full + [boolq_tokenizer.eos_token_id]


def test_completion_only_masks_the_prompt_tokenized_on_its_own(boolq_tokenizer, boolq_records):
    record = dict(boolq_records[0])
    example = tokenize_record(record, boolq_tokenizer, train_on_inputs=False)
    prompt = BOOLQ_0_TEXT.removesuffix("the correct answer is true")
    prompt_len = len(boolq_tokenizer(prompt)["input_ids"])
    ids, labels = example["input_ids"], example["labels"]
    assert labels == [IGNORE_INDEX] * prompt_len + ids[prompt_len:]
    # The paper's rule, quirk included: the prompt alone may tokenize differently at the boundary (here its
    # trailing spaces take the token that starts the answer), so the loss covers the answer's tail and EOS.
    learned = boolq_tokenizer.decode([t for t in labels if t != IGNORE_INDEX])
    assert learned.endswith("correct answer is true</s>") and "Response" not in learned


def test_validation_split_is_finetune_py_s_seeded_split(boolq_tokenizer, boolq_records):
    records = boolq_records[:64]
    train, held_out = sft_datasets(records, boolq_tokenizer, val_set_size=8)
    assert (len(train), len(held_out)) == (56, 8)
    again, _ = sft_datasets(records, boolq_tokenizer, val_set_size=8)
    assert train["input_ids"] == again["input_ids"]
    all_ids = {tuple(tokenize_record(r, boolq_tokenizer)["input_ids"]) for r in records}
    assert {tuple(x) for x in list(train["input_ids"]) + list(held_out["input_ids"])} == all_ids
    with pytest.raises(ValueError, match="val_set_size=64 must be in"):
        sft_datasets(records, boolq_tokenizer, val_set_size=64)


def test_local_file_loads_jsonl_too(tmp_path, boolq_records):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [dict(r) for r in boolq_records[:3]]) + "\n")
    assert load_records(str(path)) == [dict(r) for r in boolq_records[:3]]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.json does not exist"):
        load_records(str(tmp_path / "nope.json"))


def test_non_json_file_is_named(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"instruction": "x", ')
    with pytest.raises(ValueError, match=r"broken\.json is not valid JSON"):
        load_records(str(path))


def test_record_without_output_is_named_with_its_index(tmp_path, boolq_records):
    records = [dict(r) for r in boolq_records[:3]]
    del records[2]["output"]
    path = tmp_path / "fieldless.json"
    path.write_text(json.dumps(records))
    with pytest.raises(ValueError, match=r"fieldless\.json, record 2 lacks the text field\(s\) \['output'\]"):
        load_records(str(path))


def test_json_object_instead_of_list_is_rejected(tmp_path):
    path = tmp_path / "object.json"
    path.write_text(json.dumps({"instruction": "x", "output": "y"}))
    with pytest.raises(ValueError, match="holds a JSON dict, not a list of records"):
        load_records(str(path))


def test_dataset_folder_loads_through_datasets_like_a_hub_id(tmp_path, boolq_records, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in boolq_records[:5]) + "\n")
    assert load_records(str(folder)) == boolq_records[:5]
    (folder / "train.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(ValueError, match=r"my_dataset, record 0 lacks the text field\(s\) \['instruction', 'output'\]"):
        load_records(str(folder))


@requires_shared_data
def test_shipped_sample_is_the_start_of_the_real_boolq_training_file(boolq_records):
    (full,) = shared_files("llm_adapters/boolq/train.json")
    assert boolq_records == json.loads(full.read_text())[:200]
