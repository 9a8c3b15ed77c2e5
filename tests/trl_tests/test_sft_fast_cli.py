"""``dora sft --help`` and every argument or name error answer before torch or trl is imported.

The errors run in one fresh interpreter, which then reports which heavy packages it imported: none may be.
The option names and defaults that the fast path reads without trl are checked against the full parser.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import REPO, offline_env

from trl_integration.common_options import GROUPS, OPTIONS
from trl_integration.option_names import option_strings, sft_fields

BOOLQ = REPO / "tests" / "data" / "llm_adapters" / "boolq_train_200.json"
HEAVY = ("torch", "trl", "transformers", "peft", "datasets", "accelerate")
RUN_IN_FRESH_PROCESS = """
import contextlib, io, json, sys
from dora_plugins.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    results.append({"code": code, "out": out.getvalue(), "err": err.getvalue()})
print(json.dumps({"results": results, "heavy": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)  # noqa: UP031 - the tuple is spelt into the script


def _user_folder(root):
    folder = root / "mine"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"mine": true}')
    (folder / "notes.txt").write_text("my notes")
    return folder


def _earlier_run(root):
    folder = root / "earlier"
    (folder / "checkpoint-4").mkdir(parents=True)
    (folder / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (folder / ".dora-run.json").write_text('{"command": "dora sft", "files": []}')
    return folder


# (id, extra arguments given the case's folders, what the one error line says)
ERRORS = [
    ("misspelt-recipe", lambda f: ["--config", "dorra_typo"], "Config 'dorra_typo' is neither a file nor a shipped"),
    ("unknown-preset", lambda f: ["--preset", "dorra"], "Unknown preset 'dorra'. Did you mean 'dora'?"),
    ("unknown-option", lambda f: ["--lerning_rate", "1e-4"],
     "Unknown option --lerning_rate. Did you mean '--learning_rate'?"),
    ("ambiguous-option", lambda f: ["--lora_", "8"], "Option --lora_ is ambiguous: it could be --lora_alpha"),
    ("bad-number", lambda f: ["--max_steps", "ten"], "argument --max_steps: invalid int value: 'ten'"),
    ("bad-choice", lambda f: ["--precision", "fp8"], "argument --precision: invalid choice: 'fp8'"),
    ("bad-bool", lambda f: ["--dry_run", "maybe"], "argument --dry_run: expected true or false, got 'maybe'"),
    ("misspelt-yaml-key", lambda f: ["--config", str(f["recipe"])], "Unknown key(s) ['learning_rat'] in config"),
    ("missing-dataset", lambda f: ["--dataset_name", str(f["root"] / "nope.json")], "nope.json does not exist"),
    ("missing-model", lambda f: ["--model_name_or_path", str(f["root"] / "nomodel")],
     "is neither an existing folder nor a hub id"),
    ("output-with-user-files", lambda f: ["--output_dir", str(f["mine"])], "holds files that 'dora sft' did not"),
    ("output-with-earlier-run", lambda f: ["--output_dir", str(f["earlier"])], "holds an earlier training run"),
    ("resume-and-overwrite", lambda f: ["--output_dir", str(f["earlier"]), "--overwrite",
                                        "--resume_from_checkpoint", "true"], "pass only one of them"),
    ("resume-without-checkpoint", lambda f: ["--resume_from_checkpoint", "true"], "holds no checkpoint-N folder"),
    ("merged-output-with-user-files", lambda f: ["--merged_output_dir", str(f["mine"])],
     "already exists and is not empty. Pass --overwrite_merged_output_dir"),
]  # fmt: skip


@pytest.fixture(scope="module")
def fresh_process(tmp_path_factory):
    """Run ``dora --help``, ``dora sft --help`` and every error case in one new interpreter; its report."""
    root = tmp_path_factory.mktemp("fast_cli")
    model = root / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")  # the checks before trl read no more than its presence
    recipe = root / "mine.yaml"
    recipe.write_text("learning_rat: 1.0e-4\nlora_r: 8\n")
    folders = {"root": root, "recipe": recipe, "mine": _user_folder(root), "earlier": _earlier_run(root)}
    base = ["sft", "--model_name_or_path", str(model), "--dataset_name", str(BOOLQ), "--output_dir", str(root / "run")]
    argvs = [["--help"], ["sft", "--help"]] + [base + extra(folders) for _, extra, _ in ERRORS]
    proc = subprocess.run(
        [sys.executable, "-c", RUN_IN_FRESH_PROCESS, json.dumps(argvs)],
        capture_output=True, text=True, env=offline_env(), timeout=300, cwd=root,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    report["folders"] = folders
    return report


def test_help_and_errors_import_neither_torch_nor_trl(fresh_process):
    assert fresh_process["heavy"] == []


@pytest.mark.parametrize(("case", "message"), [(case, message) for case, _, message in ERRORS])
def test_each_argument_error_is_one_line_before_anything_loads(fresh_process, case, message):
    result = fresh_process["results"][2 + [c for c, _, _ in ERRORS].index(case)]
    lines = result["err"].strip().splitlines()
    assert result["code"] == 2 and len(lines) == 1 and lines[0].startswith("dora sft: error: "), result["err"]
    assert message in lines[0]


def test_output_errors_name_the_folder_and_leave_it_alone(fresh_process):
    folders, results = fresh_process["folders"], fresh_process["results"]
    cases = [c for c, _, _ in ERRORS]
    assert str(folders["mine"]) in results[2 + cases.index("output-with-user-files")]["err"]
    assert str(folders["mine"]) in results[2 + cases.index("merged-output-with-user-files")]["err"]
    assert sorted(p.name for p in folders["mine"].iterdir()) == ["adapter_config.json", "notes.txt"]
    assert (folders["mine"] / "adapter_config.json").read_text() == '{"mine": true}'
    assert not (folders["root"] / "run").exists()


def test_sft_help_leads_with_the_common_options_and_points_to_help_all(fresh_process):
    help_ = fresh_process["results"][1]
    assert help_["code"] == 0 and help_["err"] == ""
    text = help_["out"]
    assert text.startswith("usage: dora sft --config RECIPE|FILE.yaml") and "--help-all" in text
    assert len(text.splitlines()) < 120  # the full list is over 700 lines
    options = [line.split()[0] for line in text.splitlines() if line.startswith("  --")]
    assert options == ["--config", *[f"--{o.name}" for group in GROUPS.values() for o in group], "--help-all"]
    assert 20 <= len(options) <= 30
    assert text.count("--no_train_on_inputs") == 1  # named in --train_on_inputs' help, not repeated as an option
    assert fresh_process["results"][0]["code"] == 0 and "sft" in fresh_process["results"][0]["out"]


def test_option_names_read_from_source_are_the_full_parsers():
    from trl_integration.cli import full_options

    fields = sft_fields()
    assert fields is not None
    full = full_options()
    assert option_strings(fields) == {option: dest for option, dest in full.items() if option not in ("-h", "--help")}


def test_common_options_have_the_full_parsers_defaults_and_choices():
    from trl_integration.cli import make_parser

    parser = make_parser()
    actions = {action.option_strings[0]: action for action in parser._actions}
    for name, option in OPTIONS.items():
        action = actions[f"--{name}"]
        assert parser.get_default(name) == option.default, name
        assert tuple(action.choices or ()) == tuple(option.choices or ()), name


def test_help_all_gives_no_option_the_help_of_another():
    from trl_integration.cli import make_parser

    helps = [action.help for action in make_parser()._actions if action.help]
    repeated = {text for text in helps if helps.count(text) > 1}
    assert not repeated
    no_flag = next(a for a in make_parser()._actions if "--no_train_on_inputs" in a.option_strings)
    assert no_flag.help == "Same as --train_on_inputs false."
