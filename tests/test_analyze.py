"""``dora analyze``: delta-M / delta-D of real PEFT checkpoints equal the paper's definition on dense float64 weights;
a LoRA checkpoint's magnitude is the implied ||W0 + sBA||; bad inputs are clear errors."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TARGETS, make_tiny_llama
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file

from dora_plugins.cli import main as dora_main
from dora_plugins.cli.analyze import FIELDS


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("base")
    make_tiny_llama(dtype=torch.float64).save_pretrained(directory)
    return directory


def _adapted(base_dir: Path, use_dora: bool, seed: int, scale: float = 0.3):
    """The base with a PEFT LoRA/DoRA adapter whose factors (and magnitude) moved away from their initial values."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float64)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, use_dora=use_dora, lora_dropout=0.0)
    model = get_peft_model(model, config)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=scale)
            if "lora_magnitude_vector" in name:
                param.mul_(torch.empty_like(param).uniform_(0.5, 1.5))
                param[0] = -param[0]  # a negative magnitude flips the row's direction
    return model


def _dense_reference(model) -> dict[str, tuple[float, float]]:
    """Eq. 5 and 6 on the full W' = m V / ||V|| (DoRA) or V = W0 + s B A (LoRA), in float64."""
    reference = {}
    for name, module in model.named_modules():
        if not hasattr(module, "lora_A") or "default" not in module.lora_A:
            continue
        w0 = module.get_base_layer().weight.double()
        a, b = module.lora_A["default"].weight.double(), module.lora_B["default"].weight.double()
        v = w0 + module.scaling["default"] * b @ a  # (out, in)
        w = v
        if "default" in module.lora_magnitude_vector:
            w = module.lora_magnitude_vector["default"].weight.double()[:, None] * v / v.norm(dim=1, keepdim=True)
        delta_m = (w.norm(dim=1) - w0.norm(dim=1)).abs().mean().item()
        delta_d = (1 - torch.nn.functional.cosine_similarity(w, w0, dim=1)).mean().item()
        reference[name.removeprefix("base_model.model.")] = (delta_m, delta_d)
    return reference


def _analyze(*argv) -> int:
    return dora_main(["analyze", *map(str, argv)])


def _rows(output: Path) -> list[dict]:
    with open(output / "dynamics.csv", newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def two_runs(base_dir, tmp_path_factory):
    """A LoRA run and a DoRA run, two checkpoints each, with their dense references, analyzed once."""
    root = tmp_path_factory.mktemp("runs")
    references = {}
    for run, use_dora in (("lora", False), ("dora", True)):
        for step, seed in ((10, 1), (20, 2)):
            model = _adapted(base_dir, use_dora, seed, scale=0.1 * step / 10)
            model.save_pretrained(root / run / f"checkpoint-{step}")
            references[(run, step)] = _dense_reference(model)
    output = root / "analysis"
    checkpoints = sorted(root.glob("*/checkpoint-*"))
    assert _analyze("--base", base_dir, *checkpoints, "--output", output) == 0
    return output, references


def test_analyze_equals_the_dense_float64_reference(two_runs):
    output, references = two_runs
    rows = _rows(output)
    assert list(rows[0]) == FIELDS
    assert len(rows) == 4 * 2 * len(TARGETS)  # checkpoints x layers x targets
    for row in rows:
        delta_m, delta_d = references[(row["run"], int(row["step"]))][row["module"]]
        assert float(row["delta_m"]) == pytest.approx(delta_m, rel=1e-10, abs=1e-12)
        assert float(row["delta_d"]) == pytest.approx(delta_d, rel=1e-10, abs=1e-12)
        assert row["method"] == {"lora": "LoRA", "dora": "DoRA"}[row["run"]]
        assert row["target"] == row["module"].rsplit(".", 1)[-1]
    assert min(float(row["delta_d"]) for row in rows) > 0


def test_json_holds_the_rows_and_each_runs_least_squares_slope(two_runs):
    output, _ = two_runs
    report = json.loads((output / "dynamics.json").read_text())
    rows = _rows(output)
    assert report["figure_module"] == "q_proj"
    assert len(report["rows"]) == len(rows)
    assert set(report["runs"]) == {"lora", "dora"}
    for run, fit in report["runs"].items():
        for target in TARGETS:
            mine = [r for r in rows if r["run"] == run and r["target"] == target]
            x, y = (np.array([float(r[k]) for r in mine]) for k in ("delta_d", "delta_m"))
            assert fit["slope"][target] == pytest.approx(np.polyfit(x, y, 1)[0], rel=1e-9)


def test_lora_delta_m_is_the_implied_magnitude_and_dora_keeps_its_own(base_dir, tmp_path):
    """Same A and B: LoRA's delta-M is | ||W0 + sBA|| - ||W0|| | > 0; DoRA with m still ||W0|| has delta-M 0."""
    dora = _adapted(base_dir, use_dora=True, seed=3)
    lora = _adapted(base_dir, use_dora=False, seed=3)
    with torch.no_grad():
        for name, param in dora.named_parameters():
            if "lora_magnitude_vector" in name:  # back to its initial value ||W0|| (B was 0 at initialisation)
                module = dora.get_submodule(name.rsplit(".lora_magnitude_vector", 1)[0])
                param.copy_(module.get_base_layer().weight.norm(dim=1))
        lora.load_state_dict({k: v for k, v in dora.state_dict().items() if "magnitude" not in k}, strict=False)
    dora.save_pretrained(tmp_path / "dora" / "checkpoint-1")
    lora.save_pretrained(tmp_path / "lora" / "checkpoint-1")
    checkpoints = [tmp_path / "dora" / "checkpoint-1", tmp_path / "lora" / "checkpoint-1"]
    assert _analyze("--base", base_dir, *checkpoints, "--output", tmp_path / "out") == 0
    rows = {(r["method"], r["module"]): r for r in _rows(tmp_path / "out")}
    q = lora.base_model.model.model.layers[0].self_attn.q_proj
    w0 = q.base_layer.weight
    implied = (w0 + q.scaling["default"] * q.lora_B["default"].weight @ q.lora_A["default"].weight).norm(dim=1)
    expected = (implied - w0.norm(dim=1)).abs().mean().item()
    module = "model.layers.0.self_attn.q_proj"
    assert float(rows[("LoRA", module)]["delta_m"]) == pytest.approx(expected, rel=1e-10) and expected > 1e-3
    assert float(rows[("DoRA", module)]["delta_m"]) == pytest.approx(0, abs=1e-12)
    assert float(rows[("DoRA", module)]["delta_d"]) == pytest.approx(float(rows[("LoRA", module)]["delta_d"]))


def test_a_full_fine_tuned_checkpoint_equals_the_dense_reference(base_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float64)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(4)
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(1 + 0.2 * torch.randn_like(param))
    model.save_pretrained(tmp_path / "ft" / "checkpoint-7")
    assert _analyze("--base", base_dir, tmp_path / "ft" / "checkpoint-7", "--output", tmp_path / "out") == 0
    rows = _rows(tmp_path / "out")
    assert {r["target"] for r in rows} == set(TARGETS) and {r["method"] for r in rows} == {"FT"}
    for row in rows:
        w, w0 = model.state_dict()[row["module"] + ".weight"], base[row["module"] + ".weight"]
        assert float(row["delta_m"]) == pytest.approx((w.norm(dim=1) - w0.norm(dim=1)).abs().mean().item(), rel=1e-10)
        cos = torch.nn.functional.cosine_similarity(w, w0, dim=1)
        assert float(row["delta_d"]) == pytest.approx((1 - cos).mean().item(), rel=1e-9)
        assert row["step"] == "7"


def test_a_module_with_only_a_magnitude_is_dora_with_b_zero(base_dir, tmp_path):
    model = _adapted(base_dir, use_dora=True, seed=5)
    model.save_pretrained(tmp_path / "full")
    folder = tmp_path / "run" / "checkpoint-3"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text((tmp_path / "full" / "adapter_config.json").read_text())
    tensors = load_file(tmp_path / "full" / "adapter_model.safetensors")
    module = "model.layers.1.mlp.up_proj"
    magnitude_key = f"base_model.model.{module}.lora_magnitude_vector"
    kept = {k: v for k, v in tensors.items() if not k.startswith(f"base_model.model.{module}.lora_")}
    save_file(kept | {magnitude_key: tensors[magnitude_key]}, folder / "adapter_model.safetensors")
    assert _analyze("--base", base_dir, folder, "--output", tmp_path / "out") == 0
    row = next(r for r in _rows(tmp_path / "out") if r["module"] == module)
    m = tensors[magnitude_key]
    w0 = model.base_model.model.model.layers[1].mlp.up_proj.base_layer.weight
    assert float(row["delta_m"]) == pytest.approx((m.abs() - w0.norm(dim=1)).abs().mean().item(), rel=1e-10)
    assert float(row["delta_d"]) == pytest.approx(2 / m.numel(), rel=1e-10)  # only row 0 (m < 0) turned: 1 - cos = 2


def test_the_figure_is_drawn_with_matplotlib_and_reported(two_runs, base_dir, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    output, _ = two_runs
    assert (output / "dynamics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    checkpoints = sorted(output.parent.glob("*/checkpoint-*"))
    assert _analyze("--base", base_dir, *checkpoints, "--output", tmp_path / "out") == 0
    out, err = capsys.readouterr()
    assert "dynamics.png" in out.splitlines()[-1] and "matplotlib" not in err


def test_without_matplotlib_the_csv_and_json_are_still_written(two_runs, base_dir, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what `import matplotlib` sees when it is not installed
    checkpoints = sorted(two_runs[0].parent.glob("*/checkpoint-*"))
    assert _analyze("--base", base_dir, *checkpoints, "--output", tmp_path / "out") == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dynamics.csv", "dynamics.json"]
    err = capsys.readouterr().err
    assert "matplotlib is not installed" in err and "pip install 'dora-plugins[plot]'" in err


def test_help_documents_the_quantities_and_outputs(capsys):
    with pytest.raises(SystemExit) as exit_:
        _analyze("--help")
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    for text in ("--base", "--output", "checkpoint-N", "delta_M", "delta_D", "dynamics.csv", "dynamics.png", "slope"):
        assert text in out


def _error(capsys, *argv) -> str:
    assert _analyze(*argv) == 2
    err = capsys.readouterr().err  # after the progress bar, if the error came up while analyzing
    assert err.splitlines()[-1].startswith("dora analyze: error: ") and "Traceback" not in err
    return err.splitlines()[-1]


def test_no_checkpoints_is_a_usage_error(base_dir, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        _analyze("--base", base_dir, "--output", tmp_path / "out")
    assert exit_.value.code == 2 and "CHECKPOINT" in capsys.readouterr().err


def test_a_glob_that_matched_nothing_names_the_path(base_dir, capsys, tmp_path):
    err = _error(capsys, "--base", base_dir, tmp_path / "runs" / "checkpoint-*", "--output", tmp_path / "out")
    assert "checkpoint-*" in err and "is not a folder" in err
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_of_another_base_is_refused(base_dir, capsys, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=128)  # fmt: skip
    other = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, target_modules=TARGETS, use_dora=True))
    other.save_pretrained(tmp_path / "other" / "checkpoint-1")
    err = _error(capsys, "--base", base_dir, tmp_path / "other" / "checkpoint-1", "--output", tmp_path / "out")
    assert "does not fit the base model" in err and "the base model has shape [64, 128]" in err and "--base" in err
    assert not (tmp_path / "out").exists()


def test_a_folder_that_is_no_checkpoint_and_a_step_that_is_unknown_are_refused(two_runs, base_dir, capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    err = _error(capsys, "--base", base_dir, tmp_path / "empty", "--output", tmp_path / "out")
    assert "neither adapter_config.json" in err
    renamed = tmp_path / "final"
    renamed.mkdir()
    for file in (two_runs[0].parent / "lora" / "checkpoint-10").iterdir():
        (renamed / file.name).write_bytes(file.read_bytes())
    err = _error(capsys, "--base", base_dir, renamed, "--output", tmp_path / "out")
    assert "Cannot tell the training step" in err and "trainer_state.json" in err


def test_an_unknown_figure_module_suggests_one(two_runs, base_dir, capsys, tmp_path):
    checkpoint = two_runs[0].parent / "lora" / "checkpoint-10"
    err = _error(capsys, "--base", base_dir, checkpoint, "--output", tmp_path / "out", "--figure-module", "q_prj")
    assert "Did you mean 'q_proj'?" in err


def test_a_non_empty_output_is_kept_without_overwrite(two_runs, base_dir, capsys, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    checkpoint = two_runs[0].parent / "lora" / "checkpoint-10"
    assert "--overwrite" in _error(capsys, "--base", base_dir, checkpoint, "--output", tmp_path / "out")
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
