"""SFTTrainer from Python with our configs; crash-safe checkpoints; the delta-M / delta-D callback."""

from __future__ import annotations

import re

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTConfig, SFTTrainer

from dora_plugins import DoraConfig, adapter_config
from dora_plugins.peft_layer import DoraMagnitude
from trl_integration import DoraDynamicsCallback, DoraSFTTrainer, sft_datasets
from trl_integration.callbacks import weight_dynamics

TARGETS = {"q_proj", "k_proj", "v_proj", "up_proj", "down_proj"}


def _args(tmp_path, **overrides) -> SFTConfig:
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=5e-3,
        logging_steps=1,
        bf16=False,  # CPU
        report_to="none",
        save_strategy="no",
        gradient_checkpointing=False,
        disable_tqdm=True,
    )
    return SFTConfig(**{**defaults, **overrides})


@pytest.fixture(scope="module")
def train_set(boolq_records, boolq_tokenizer):
    return sft_datasets(boolq_records[:16], boolq_tokenizer)[0]


@pytest.mark.parametrize(
    ("make_config", "rank"),
    [(lambda: DoraConfig(), 32), (lambda: adapter_config("dora_half"), 16)],
    ids=["DoraConfig", "adapter_config-dora_half"],
)
def test_sft_trainer_trains_exactly_lora_factors_and_magnitude(
    tmp_path, tiny_model_dir, boolq_tokenizer, train_set, make_config, rank
):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trainer = SFTTrainer(
        model=model,
        args=_args(tmp_path),
        train_dataset=train_set,
        processing_class=boolq_tokenizer,
        peft_config=make_config(),
    )
    trainable = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    kinds = {
        re.search(r"\.(\w+)\.(lora_A|lora_B|lora_magnitude_vector)\.default\.weight$", n).groups() for n in trainable
    }
    assert kinds == {(t, k) for k in ("lora_A", "lora_B", "lora_magnitude_vector") for t in TARGETS}
    assert len(trainable) == 3 * len(TARGETS) * 2  # 2 layers
    assert all(p.shape[0] == rank for n, p in trainable.items() if "lora_A" in n)
    magnitudes = [m for name, m in trainer.model.named_modules() if name.endswith("lora_magnitude_vector.default")]
    assert len(magnitudes) == 10 and all(isinstance(m, DoraMagnitude) for m in magnitudes)  # our layer, not PEFT's
    frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if not p.requires_grad}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert all(not torch.equal(after[n], before) for n, before in trainable.items() if "lora_B" in n)
    assert all(torch.equal(after[n], before) for n, before in frozen.items())


@pytest.mark.parametrize("train_on_inputs", [True, False])
def test_sft_trainer_loss_is_the_paper_loss(tmp_path, tiny_model_dir, boolq_tokenizer, boolq_records, train_on_inputs):
    """finetune.py's loss: HF's causal-LM loss, the mean over every unmasked next token of the batch."""
    train = sft_datasets(boolq_records[:4], boolq_tokenizer, train_on_inputs=train_on_inputs)[0]
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(),
        args=_args(tmp_path),
        train_dataset=train,
        processing_class=boolq_tokenizer,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
        total, count = 0.0, 0
        for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
            n = int(mask.sum())
            assert labels[:n].tolist() == next(r["labels"] for r in train if r["input_ids"] == ids[:n].tolist())
            logits = trainer.model(ids[None, :n]).logits[0]  # (n, vocab), no padding at all
            total += torch.nn.functional.cross_entropy(logits[:-1], labels[1:n], reduction="sum").item()
            count += int((labels[1:n] != -100).sum())
    assert loss.item() == pytest.approx(total / count, rel=1e-5)


def test_magnitude_stays_fp32_on_a_bf16_model(tmp_path, tiny_model_dir, boolq_tokenizer, train_set):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    trainer = SFTTrainer(
        model=model,
        args=_args(tmp_path),
        train_dataset=train_set,
        processing_class=boolq_tokenizer,
        peft_config=DoraConfig(),
    )
    magnitudes = {n: p for n, p in trainer.model.named_parameters() if "lora_magnitude_vector" in n}
    before = {n: p.detach().clone() for n, p in magnitudes.items()}
    trainer.train()
    assert all(p.dtype == torch.float32 for p in magnitudes.values())
    assert any(not torch.equal(p, before[n]) for n, p in magnitudes.items())  # they learned, in fp32
    base = trainer.model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight
    assert base.dtype == torch.bfloat16


def _reference_dynamics(model) -> dict[str, float]:
    """delta-M / delta-D from the full fine-tuned weights W' (out, in), as the paper defines them."""
    sums: dict[str, list] = {}
    for name, module in model.named_modules():
        if not hasattr(module, "lora_A") or "default" not in module.lora_A:
            continue
        w0 = module.get_base_layer().weight.double()
        v = (
            w0
            + module.scaling["default"]
            * module.lora_B["default"].weight.double()
            @ module.lora_A["default"].weight.double()
        )
        if "default" in module.lora_magnitude_vector:
            m = module.lora_magnitude_vector["default"].weight.double()
            w = m[:, None] * v / v.norm(dim=1, keepdim=True)
        else:
            w = v
        delta_m = (w.norm(dim=1) - w0.norm(dim=1)).abs()
        delta_d = 1 - torch.nn.functional.cosine_similarity(w, w0, dim=1)
        entry = sums.setdefault(name.rsplit(".", 1)[-1], [[], []])
        entry[0].append(delta_m)
        entry[1].append(delta_d)
    stats = {}
    for target, (dm, dd) in sums.items():
        stats[f"dora/{target}/delta_m"] = torch.cat(dm).mean().item()
        stats[f"dora/{target}/delta_d"] = torch.cat(dd).mean().item()
    return stats


def _move_away_from_init(model) -> None:
    """Non-zero B and magnitudes off the row norms, as training leaves them (draws from the global seed)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.3)
            if "lora_magnitude_vector" in name:
                param.mul_(torch.empty_like(param).uniform_(0.5, 1.5))


@pytest.mark.parametrize("preset", ["dora", "lora"])
def test_weight_dynamics_equal_the_paper_definition_on_full_weights(tiny_model_dir, preset):
    from peft import get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter_config(preset))
    _move_away_from_init(model)
    stats = weight_dynamics(model)
    reference = _reference_dynamics(model)
    assert set(stats) == {f"dora/{t}/{k}" for t in TARGETS for k in ("delta_m", "delta_d")}
    assert stats == pytest.approx(reference, rel=1e-4, abs=1e-6)
    assert min(stats.values()) > 0


def test_weight_dynamics_are_dora_analyzes_numbers_of_the_saved_adapter(tiny_model_dir, tmp_path):
    """The callback and ``dora analyze`` share one computation: per target, the callback's value is the mean of the
    analyzed layers (they have equal row counts)."""
    from peft import get_peft_model

    from dora_plugins.checkpoint_dynamics import WeightFolder, checkpoint_changes, read_checkpoint

    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter_config("dora"))
    _move_away_from_init(model)
    model.save_pretrained(tmp_path / "run" / "checkpoint-1")
    checkpoint = read_checkpoint(tmp_path / "run" / "checkpoint-1")
    changes = checkpoint_changes(WeightFolder(tiny_model_dir, "base model"), checkpoint, [])
    stats = weight_dynamics(model)
    for target in TARGETS:
        layers = [change for change in changes if change.target == target]
        assert len(layers) == 2
        assert stats[f"dora/{target}/delta_m"] == pytest.approx(sum(c.delta_m for c in layers) / 2, rel=1e-5)
        assert stats[f"dora/{target}/delta_d"] == pytest.approx(sum(c.delta_d for c in layers) / 2, rel=1e-5)


def test_dynamics_callback_logs_at_every_logging_step_beside_the_loss(
    tmp_path, tiny_model_dir, boolq_tokenizer, train_set
):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trainer = SFTTrainer(
        model=model,
        args=_args(tmp_path, max_steps=3),
        train_dataset=train_set,
        processing_class=boolq_tokenizer,
        peft_config=DoraConfig(),
    )
    trainer.add_callback(DoraDynamicsCallback(trainer))
    trainer.train()
    history = trainer.state.log_history
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3]
    dynamics = [h for h in history if "dora/q_proj/delta_m" in h]
    assert [h["step"] for h in dynamics] == [1, 2, 3]
    assert dynamics[-1] == pytest.approx({**weight_dynamics(trainer.model), "step": 3, "epoch": dynamics[-1]["epoch"]})
    assert dynamics[0]["dora/q_proj/delta_d"] < dynamics[-1]["dora/q_proj/delta_d"]


class _CrashOnSecondSave(DoraSFTTrainer):
    """Dies while writing checkpoint-4, after the adapter files and before the optimizer state."""

    def _save_optimizer_and_scheduler(self, output_dir):
        if self.state.global_step == 4:
            raise RuntimeError("simulated crash mid-save")
        super()._save_optimizer_and_scheduler(output_dir)


def test_crash_mid_save_leaves_the_previous_checkpoint_latest_and_resume_works(
    tmp_path, tiny_model_dir, boolq_tokenizer, train_set
):
    args = _args(tmp_path, max_steps=6, save_strategy="steps", save_steps=2)
    crashing = _CrashOnSecondSave(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=args,
        train_dataset=train_set,
        processing_class=boolq_tokenizer,
        peft_config=DoraConfig(),
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.train()
    out = tmp_path / "out"
    assert (out / ".partial" / "checkpoint-4" / "adapter_model.safetensors").is_file()  # it died mid-save
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert get_last_checkpoint(str(out)) == str(out / "checkpoint-2")
    assert {"adapter_model.safetensors", "optimizer.pt", "trainer_state.json"} <= {
        p.name for p in (out / "checkpoint-2").iterdir()
    }
    resumed = DoraSFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=args,
        train_dataset=train_set,
        processing_class=boolq_tokenizer,
        peft_config=DoraConfig(),
    )
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 6
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    resumed.save_model(str(out))
    saved = (out / "adapter_model.safetensors").read_bytes()
    assert not list(out.glob(".saving-*")) and not (out / ".partial").exists()

    write = resumed.model.save_pretrained

    def write_then_die(directory, **kwargs):
        write(directory, **kwargs)
        raise OSError("simulated: disk full")

    resumed.model.save_pretrained = write_then_die
    with torch.no_grad():
        next(p for n, p in resumed.model.named_parameters() if "lora_B" in n).add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        resumed.save_model(str(out))
    assert (out / "adapter_model.safetensors").read_bytes() == saved  # the final adapter is the previous one
    assert not list(out.glob(".saving-*"))
