from pathlib import Path

from diffoseg_auto.cli.cli_reference import console_scripts, generate_cli_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_every_declared_command_is_installed_and_documented():
    import re

    declared = set(re.findall(r'"(diffoseg_[a-z0-9_]+)":', (ROOT / "setup.py").read_text()))
    assert declared and declared <= set(console_scripts())
    doc = (ROOT / "documentation" / "cli.md").read_text()
    for name in declared:
        assert f"## `{name}`" in doc


def test_cli_md_is_up_to_date():
    expected = generate_cli_markdown()
    actual = (ROOT / "documentation" / "cli.md").read_text()
    assert actual == expected, "documentation/cli.md is stale: run `python -m diffoseg_auto.cli.cli_reference > documentation/cli.md`"
