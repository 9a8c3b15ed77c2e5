"""tools/peft_suite.py, the PEFT-suite regression check, on small suites written here (PEFT's own runs in CI)."""

from __future__ import annotations

import io
import sys
import tarfile
import textwrap

import pytest
from helpers import REPO

sys.path.insert(0, str(REPO / "tools"))

import peft_suite  # noqa: E402
import peft_suite_sdist  # noqa: E402
from peft_suite_plugin import in_subset  # noqa: E402
from peft_suite_report import Outcome, compare, format_report  # noqa: E402

from dora_plugins.errors import DoraError  # noqa: E402

FAKE_TESTS = """
import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn


def dora_model():
    return inject_adapter_in_model(LoraConfig(target_modules=["0"], use_dora=True), nn.Sequential(nn.Linear(4, 3)))


def test_dora_starts_as_the_base_layer():
    model, x = dora_model(), torch.randn(2, 4)
    torch.testing.assert_close(model(x), model[0].base_layer(x))


def test_dora_layer_is_peft_own():
    assert type(dora_model()[0]).__module__.startswith("peft.")


def test_dora_from_the_hub():
    raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")


@pytest.mark.parametrize("use_dora", [False, True])
def test_embed_scale(use_dora):
    pass


@pytest.mark.parametrize("kwargs", [{"use_dora": True}, {"r": 4}])
def test_incompatible_arguments(kwargs):
    pass


def test_plain_lora():
    pass
"""


def write_suite(root, tests: str):
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "__init__.py").touch()
    (root / "tests" / "test_fake.py").write_text(textwrap.dedent(tests), encoding="utf-8")
    (root / "pyproject.toml").write_text("[tool.pytest.ini_options]\n", encoding="utf-8")
    return root


@pytest.mark.slow
def test_stock_and_routed_runs_catch_a_test_that_only_passes_stock(tmp_path):
    suite = write_suite(tmp_path / "peft-x", FAKE_TESTS)
    args = peft_suite.parse_args(["--cache-dir", str(tmp_path)])
    modules = peft_suite.dora_test_modules(suite)
    stock = peft_suite.run_pytest(suite, modules, routed=False, args=args)
    routed = peft_suite.run_pytest(suite, modules, routed=True, args=args)

    ids = {test_id.split("::")[-1] for test_id in stock}
    assert ids == {
        "test_dora_starts_as_the_base_layer",
        "test_dora_layer_is_peft_own",
        "test_dora_from_the_hub",
        "test_embed_scale[True]",  # selected for its use_dora=True parameter
        "test_incompatible_arguments[kwargs0]",
    }
    base = "tests/test_fake.py::"
    assert stock[base + "test_dora_starts_as_the_base_layer"].layers == ("peft.tuners.lora.dora.DoraLinearLayer",)
    assert routed[base + "test_dora_starts_as_the_base_layer"].uses(ours=True)
    assert routed[base + "test_dora_starts_as_the_base_layer"].outcome == "passed"

    comparison = compare(stock, routed, intentional={})
    assert [after.id for _, after in comparison.regressions] == [base + "test_dora_layer_is_peft_own"]
    report = format_report(comparison)
    assert "PASS STOCK, FAIL ROUTED (1)" in report and "routed failed: AssertionError" in report
    assert "fail in both runs (cannot run here) (1)" in report and "huggingface.co" in report
    assert report.endswith("FAILED: 1 tests pass stock and fail routed")

    listed = compare(stock, routed, intentional={base + "test_dora_layer_is_peft_own": "by design"})
    assert not listed.problems and format_report(listed).endswith("OK: every test that passes stock passes routed")


def outcome(test_id: str, result: str, *layers: str) -> Outcome:
    return Outcome(test_id, result, "", layers)


PEFT = "peft.tuners.lora.dora.DoraLinearLayer"
OURS = "dora_plugins.peft_layer.DoraLinear"


def test_a_test_missing_from_the_routed_run_counts_as_failing_there():
    stock = {"a": outcome("a", "passed", PEFT), "b": outcome("b", "passed", PEFT)}
    routed = {"a": outcome("a", "passed", OURS)}
    comparison = compare(stock, routed, intentional={})
    assert [(before.id, after.outcome) for before, after in comparison.regressions] == [("b", "missing")]


def test_routing_that_had_no_effect_fails_the_check():
    stock = {"a": outcome("a", "passed", PEFT)}
    comparison = compare(stock, {"a": outcome("a", "passed", PEFT)}, intentional={})
    assert comparison.problems == [
        "the routed run created none of our layers, where the stock run created PEFT's DoraLinearLayer in 1 "
        "tests: routing had no effect"
    ]


def test_a_stock_run_that_used_our_layer_fails_the_check():
    comparison = compare({"a": outcome("a", "passed", OURS)}, {"a": outcome("a", "passed", OURS)}, intentional={})
    assert any("the stock run created dora-plugins layers" in problem for problem in comparison.problems)


def test_the_ci_subset_keeps_every_linear_case_and_leaves_out_conv_and_embedding_only_cases():
    test = "tests/test_custom_models.py::TestPeftCustomModel::test_merge_layers[{}-LoraConfig-config_kwargs9]"
    assert in_subset(test.format("Vanilla MLP 7 LoRA with DoRA-MLP"), "ci")
    assert in_subset(test.format("Conv2d 2 LoRA with DoRA-Conv2d"), "ci")
    assert not in_subset(test.format("Conv2d 1 LoRA with DoRA-Conv2d"), "ci")
    assert not in_subset(test.format("Embedding + transformers Conv1D 2 DoRA-EmbConv1D"), "ci")
    assert in_subset(test.format("Conv2d 1 LoRA with DoRA-Conv2d"), "full")


def test_a_subset_that_leaves_out_a_test_using_our_layer_fails_a_full_run():
    test_id = "tests/test_custom_models.py::T::test_x[Conv1d LoRA with DoRA-Conv1d-LoraConfig-config_kwargs28]"
    comparison = compare({test_id: outcome(test_id, "passed", PEFT)}, {test_id: outcome(test_id, "passed", OURS)}, {})
    peft_suite.check_subsets(comparison)
    assert comparison.problems and "subset 'ci' leaves out 1 tests that create our layer" in comparison.problems[0]


def test_missing_test_requirements_are_named_with_the_install_command(tmp_path, monkeypatch):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\npytest\nno_such_module_for_peft_suite  # imported by a test module\n")
    monkeypatch.setattr(peft_suite, "TEST_REQUIREMENTS", requirements)
    with pytest.raises(DoraError, match=r"import no_such_module_for_peft_suite, .* pip install -r .*requirements"):
        peft_suite.check_test_requirements()


def test_a_suite_without_dora_tests_is_refused(tmp_path):
    suite = write_suite(tmp_path, "def test_lora():\n    pass\n")
    with pytest.raises(DoraError, match="No test module in .* mentions use_dora"):
        peft_suite.dora_test_modules(suite)


@pytest.mark.slow
def test_a_suite_that_cannot_be_collected_stops_with_the_log(tmp_path):
    suite = write_suite(tmp_path / "peft-x", "import no_such_module_for_peft_suite  # use_dora\n")
    args = peft_suite.parse_args(["--cache-dir", str(tmp_path)])
    with pytest.raises(DoraError, match=r"(?s)exit status 2.*no_such_module_for_peft_suite"):
        peft_suite.run_pytest(suite, ["tests/test_fake.py"], routed=False, args=args)


def write_sdist(path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_unpack_keeps_the_tests_and_the_pytest_config_and_nothing_outside(tmp_path):
    write_sdist(
        tmp_path / "peft-9.9.tar.gz",
        {
            "peft-9.9/tests/test_a.py": b"use_dora = True\n",
            "peft-9.9/tests/testing_common.py": b"",
            "peft-9.9/pyproject.toml": b"[tool.pytest]\n",
            "peft-9.9/src/peft/__init__.py": b"",
            "peft-9.9/tests/../../escaped.py": b"",
        },
    )
    suite = peft_suite_sdist.unpack_tests("9.9", tmp_path)
    files = sorted(str(p.relative_to(suite)) for p in suite.rglob("*") if p.is_file())
    assert files == ["pyproject.toml", "tests/__init__.py", "tests/test_a.py", "tests/testing_common.py"]
    assert not (tmp_path / "escaped.py").exists()
    assert peft_suite_sdist.unpack_tests("9.9", tmp_path) == suite  # unpacked once


def test_an_archive_without_tests_is_refused(tmp_path):
    write_sdist(tmp_path / "peft-9.9.tar.gz", {"peft-9.9/setup.py": b""})
    with pytest.raises(DoraError, match="has no tests/ folder: it is not a peft sdist"):
        peft_suite_sdist.unpack_tests("9.9", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["peft-9.9.tar.gz"]  # no folder left behind


def test_a_folder_that_is_not_ours_is_left_alone(tmp_path):
    (tmp_path / "peft-9.9").mkdir()
    (tmp_path / "peft-9.9" / "notes.txt").write_text("mine")
    with pytest.raises(DoraError, match="exists but is not an unpacked peft suite of this script"):
        peft_suite_sdist.unpack_tests("9.9", tmp_path)
    assert (tmp_path / "peft-9.9" / "notes.txt").read_text() == "mine"


def test_a_version_the_index_does_not_have_is_reported_with_pip_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # no network: pip looks only in the empty folder below
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(DoraError, match=r"(?s)Could not download the sdist of peft==0.21.2.*No matching distribution"):
        peft_suite_sdist.fetch_sdist("0.21.2", tmp_path / "cache")
