"""The plugin manager: built-in presets, third-party plugins, collisions and broken plugins."""

from __future__ import annotations

import sys

import pytest
from peft import LoraConfig

from dora_plugins import DoraConfig, adapter_config, plugins
from dora_plugins.cli import main as dora_main
from dora_plugins.errors import ConfigError, DataError, UnknownNameError
from dora_plugins.hookspecs import hookimpl


@pytest.fixture
def clean_plugins(monkeypatch):
    """Built-ins only: installed third-party plugins must not leak into these tests."""
    monkeypatch.setenv("DORA_PLUGINS_LOAD", "")
    plugins.reset()
    try:
        yield plugins.get_plugin_manager()
    finally:
        plugins.reset()


class ExtraPreset:
    @hookimpl
    def dora_adapter_presets(self, register):
        register("dora_r4", lambda **kw: DoraConfig(r=4, lora_alpha=8, **kw), "tiny DoRA for tests")


class DuplicatePreset:
    @hookimpl
    def dora_adapter_presets(self, register):
        register("dora", lambda **kw: DoraConfig(**kw), "a second 'dora'")


class BrokenPlugin:
    @hookimpl
    def dora_adapter_presets(self, register):
        raise RuntimeError("boom")


def test_builtin_presets_are_the_papers(clean_plugins):
    presets = plugins.get_adapter_presets()
    assert set(presets) == {"dora", "dora_half", "dora_qkv", "lora"}
    assert {p.plugin for p in presets.values()} == {"dora_plugins.builtin"}
    dora = adapter_config("dora")
    assert isinstance(dora, DoraConfig) and (dora.r, dora.lora_alpha) == (32, 64)
    half = adapter_config("dora_half")
    assert isinstance(half, DoraConfig) and (half.r, half.lora_alpha) == (16, 32)
    lora = adapter_config("lora")
    assert type(lora) is LoraConfig and not lora.use_dora and (lora.r, lora.lora_alpha) == (32, 64)
    assert adapter_config("dora_half", lora_dropout=0.0, r=8).r == 8


@pytest.mark.parametrize(
    "kind, name, close, hook",
    [
        ("preset", "dora_halff", "dora_half", "dora_adapter_presets"),
        ("benchmark", "Boolq", "boolq", "dora_benchmarks"),
        ("extractor", "orignal", "original", "dora_answer_extractors"),
    ],
)
def test_lookup_finds_every_kind_and_says_the_same_about_an_unknown_name(clean_plugins, kind, name, close, hook):
    found = plugins.lookup(kind, close)
    assert found.name == close and found.plugin == "dora_plugins.builtin"
    with pytest.raises(UnknownNameError) as caught:
        plugins.lookup(kind, name)
    message = str(caught.value)
    assert f"'{name}'. Did you mean '{close}'? Available: " in message and f"the {hook} hook" in message
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, DataError)


def test_unknown_preset_and_option_suggest_close_names(clean_plugins):
    with pytest.raises(ValueError, match=r"Unknown preset 'dorra'\. Did you mean 'dora'\? Available: dora, dora_half"):
        adapter_config("dorra")
    with pytest.raises(ValueError, match=r"Unknown option 'lora_alhpa' for preset 'dora'\. Did you mean 'lora_alpha'"):
        adapter_config("dora", lora_alhpa=3)


def test_registered_plugin_adds_a_preset_listed_by_dora_plugins(clean_plugins, capsys):
    clean_plugins.register(ExtraPreset(), name="extra-preset")
    assert adapter_config("dora_r4").r == 4
    assert dora_main(["plugins"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if "dora_r4" in line)
    assert "extra-preset" in line


def test_name_collision_names_both_plugins(clean_plugins):
    clean_plugins.register(DuplicatePreset(), name="dup-plugin")
    with pytest.raises(plugins.PluginError, match="'dora'.*'dora_plugins.builtin'.*'dup-plugin'|'dup-plugin'.*'dora"):
        plugins.get_adapter_presets()


def test_broken_plugin_is_named_and_skipped(clean_plugins, capsys):
    clean_plugins.register(BrokenPlugin(), name="broken-plugin")
    with pytest.warns(UserWarning, match="plugin 'broken-plugin' failed in dora_adapter_presets"):
        presets = plugins.get_adapter_presets()
    assert {"dora", "dora_half", "lora"} <= set(presets)
    assert dora_main(["plugins"]) == 0
    assert "broken-plugin: dora_adapter_presets: RuntimeError: boom" in capsys.readouterr().out


@pytest.fixture
def entry_point_plugins(tmp_path, monkeypatch):
    """Two third-party plugins visible to importlib.metadata: one works, one raises on import."""
    (tmp_path / "good_plugin.py").write_text(
        "from dora_plugins.hookspecs import hookimpl\n"
        "from dora_plugins import DoraConfig\n"
        "@hookimpl\n"
        "def dora_adapter_presets(register):\n"
        "    register('good_preset', lambda **kw: DoraConfig(r=2, **kw), 'from an entry point')\n"
    )
    (tmp_path / "bad_plugin.py").write_text("raise ImportError('missing dependency xyz')\n")
    dist = tmp_path / "third_party_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: third-party-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[dora_plugins]\ngood = good_plugin\nbad = bad_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("DORA_PLUGINS_LOAD", raising=False)
    plugins.reset()
    try:
        yield
    finally:
        plugins.reset()
        sys.modules.pop("good_plugin", None)


def test_entry_point_plugin_loads_and_a_failing_one_is_named(entry_point_plugins, capsys):
    with pytest.warns(UserWarning, match=r"plugin 'bad' \(bad_plugin\) failed to load.*missing dependency xyz"):
        presets = plugins.get_adapter_presets()
    assert presets["good_preset"].plugin == "good"
    assert adapter_config("good_preset").r == 2
    assert {"dora", "dora_half", "lora"} <= set(presets)
    assert "missing dependency xyz" in plugins.load_errors()["bad"]
    assert dora_main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "failed plugins:" in out and "bad: ImportError: missing dependency xyz" in out
    assert "improved" in out  # the built-in extractors are still listed


def test_dora_plugins_load_limits_third_party_plugins(entry_point_plugins, monkeypatch):
    monkeypatch.setenv("DORA_PLUGINS_LOAD", "good")
    presets = plugins.get_adapter_presets()  # 'bad' is never imported, so no warning
    assert "good_preset" in presets and plugins.load_errors() == {}
    plugins.reset()
    monkeypatch.setenv("DORA_PLUGINS_LOAD", "")
    assert "good_preset" not in plugins.get_adapter_presets()
