"""README.md's settings table is the generated one, and every setting documents itself."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from fedlearn.cli import main
from fedlearn.cli.settings import BEGIN, END, settings_markdown
from fedlearn.config import Settings, load_settings, setting_default

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_has_a_description() -> None:
    assert [n for n, f in Settings.model_fields.items() if not f.description] == []


def test_readme_table_is_the_generated_one() -> None:
    text = README.read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    assert text[start:end] == settings_markdown(), (
        "README.md's settings table differs from Settings; regenerate it with "
        "`fedlearn settings --markdown`"
    )


def test_command_prints_every_variable() -> None:
    out = CliRunner().invoke(main, ["settings"]).output
    for name in Settings.model_fields:
        assert f"FEDLEARN_{name.upper()}" in out


def test_section_view_and_defaults_follow_the_settings() -> None:
    settings = load_settings(gate_decay=0.5, gate_eta=2.0)
    assert (settings.gate.decay, settings.gate.eta) == (0.5, 2.0)
    assert setting_default("clone_l2") == Settings.model_fields["clone_l2"].default
