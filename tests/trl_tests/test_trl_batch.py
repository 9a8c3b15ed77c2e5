"""The global batch split: per-device batch x accumulation x replicas, and the steps Trainer then makes."""

from __future__ import annotations

import logging

import pytest
from transformers import AutoModelForCausalLM

from dora_plugins.errors import ConfigError
from trl_integration import DoraSFTConfig, DoraSFTTrainer, sft_datasets
from trl_integration.batch import plan_batch, steps_per_epoch


@pytest.mark.parametrize(
    ("replicas", "max_per_device", "split"),
    [
        (1, None, (16, 1)),
        (8, None, (2, 1)),
        (16, None, (1, 1)),
        (1, 4, (4, 4)),
        (2, 3, (2, 4)),  # 8 per replica: the largest divisor of 8 up to 3 is 2
        (4, 100, (4, 1)),
    ],
)
def test_global_batch_is_split_over_replicas_with_the_largest_per_device_batch_that_fits(
    replicas, max_per_device, split
):
    plan = plan_batch(16, replicas, max_per_device)
    assert (plan.per_device, plan.accumulation) == split
    assert plan.effective == 16 and plan.mismatch() is None


def test_world_size_that_does_not_divide_the_global_batch_is_one_line_saying_what_to_set():
    with pytest.raises(ConfigError) as error:
        plan_batch(16, 3)
    message = str(error.value)
    assert "\n" not in message
    assert "global_batch_size 16 cannot be split over 3 data-parallel processes" in message
    assert "(1, 2, 4, 8, 16)" in message and "--global_batch_size to a multiple of 3" in message


def test_explicit_per_device_batch_wins_and_a_changed_global_batch_is_named():
    assert plan_batch(16, 2, per_device=4).accumulation == 2  # still 16: no warning
    assert plan_batch(16, 2, per_device=4).mismatch() is None
    plan = plan_batch(16, 2, per_device=16)
    assert (plan.per_device, plan.accumulation, plan.effective) == (16, 1, 32)
    assert "effective batch of 32, not the recipe's global_batch_size 16" in plan.mismatch()
    assert plan_batch(16, 3, per_device=2, accumulation=3).effective == 18  # explicit: no divisibility error


def test_without_a_global_batch_trl_defaults_apply():
    assert (plan_batch(None, 4).per_device, plan_batch(None, 4).accumulation) == (8, 1)
    assert plan_batch(None, 4, per_device=3).mismatch() is None


@pytest.mark.parametrize("bad", [{"global_batch": 0}, {"global_batch": 16, "max_per_device": 0}])
def test_nonsense_sizes_are_refused(bad):
    with pytest.raises(ConfigError, match="must be"):
        plan_batch(bad["global_batch"], 1, bad.get("max_per_device"))


@pytest.mark.parametrize("global_batch", [16, None])
@pytest.mark.parametrize(
    ("explicit", "name"),
    [
        ({"per_device": 0}, "per_device_train_batch_size=0"),
        ({"per_device": -2}, "per_device_train_batch_size=-2"),
        ({"accumulation": 0}, "gradient_accumulation_steps=0"),
        ({"per_device": 4, "accumulation": -1}, "gradient_accumulation_steps=-1"),
    ],
)
def test_explicit_sizes_below_one_are_refused_by_name(global_batch, explicit, name):
    with pytest.raises(ConfigError, match=f"{name} must be at least 1"):
        plan_batch(global_batch, 1, **explicit)


@pytest.mark.parametrize(("examples", "max_per_device"), [(60, 2), (61, 3), (64, 8), (7, 4)])
def test_steps_per_epoch_is_what_the_trainer_counts(
    tmp_path, tiny_model_dir, boolq_tokenizer, boolq_records, examples, max_per_device
):
    records = (boolq_records * 2)[:examples]
    train = sft_datasets(records, boolq_tokenizer)[0]
    args = DoraSFTConfig(
        output_dir=str(tmp_path), global_batch_size=8, max_per_device_train_batch_size=max_per_device,
        report_to="none", gradient_checkpointing=False,
    )  # fmt: skip
    trainer = DoraSFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=args, train_dataset=train,
        processing_class=boolq_tokenizer,
    )  # fmt: skip
    counted = trainer.set_initial_training_values(args, trainer.get_train_dataloader())[1]
    assert steps_per_epoch(examples, args.batch_plan) == counted == -(-examples // 8)


def test_dora_sft_config_derives_the_split_and_warns_when_explicit_values_change_it(tmp_path, caplog):
    derived = DoraSFTConfig(output_dir=str(tmp_path), global_batch_size=16, max_per_device_train_batch_size=4)
    assert (derived.per_device_train_batch_size, derived.gradient_accumulation_steps) == (4, 4)
    with caplog.at_level(logging.WARNING):
        explicit = DoraSFTConfig(output_dir=str(tmp_path), global_batch_size=16, per_device_train_batch_size=32)
    assert (explicit.per_device_train_batch_size, explicit.gradient_accumulation_steps) == (32, 1)
    assert "effective batch of 32, not the recipe's global_batch_size 16" in caplog.text
    plain = DoraSFTConfig(output_dir=str(tmp_path))
    assert (plain.per_device_train_batch_size, plain.gradient_accumulation_steps) == (8, 1)  # as SFTConfig
