"""docs/configuration.md's reference is what broker/config_reference.py generates from the config table:
a config added (or changed) without regenerating the doc fails here, naming the command that fixes it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lodestream.broker import config, config_reference
from lodestream.broker.config import BROKER_CONFIGS, TOPIC_CONFIGS, ConfigDef


def _generated_part() -> str:
    document = config_reference.DOC.read_text(encoding="utf-8")
    start, end = document.find(config_reference.BEGIN), document.find(config_reference.END)
    assert 0 <= start < end, f"{config_reference.DOC} has lost its generated markers: run {config_reference.COMMAND}"
    return document[start:end + len(config_reference.END)] + "\n"


def test_the_documented_reference_is_up_to_date():
    assert _generated_part() == config_reference.generate(), (
        f"docs/configuration.md is out of date with broker/config.py: run {config_reference.COMMAND}")


def test_every_config_is_named_with_its_update_mode_or_reason():
    part = _generated_part()
    for name, definition in BROKER_CONFIGS.items():
        assert f"`{name}`" in part, name
        if definition.no_effect:
            assert definition.no_effect in part, name
    for name, definition in TOPIC_CONFIGS.items():
        assert f"`{name}`" in part, name
    row = next(line for line in part.splitlines() if line.startswith("| `ssl.key.password` |"))
    assert "PASSWORD" in row and "per-broker" in row
    row = next(line for line in part.splitlines() if line.startswith("| `num.partitions` |"))
    assert "`1`" in row and ">= 1" in row and "honoured" in row


def test_a_new_config_without_the_doc_regenerated_fails(monkeypatch, tmp_path):
    monkeypatch.setitem(BROKER_CONFIGS, "lodestream.example.new.setting", ConfigDef(
        "lodestream.example.new.setting", config._at_least(3), "7", "INT", "An undocumented newcomer"))
    assert _generated_part() != config_reference.generate()
    copy = tmp_path / "configuration.md"
    copy.write_text(config_reference.DOC.read_text(encoding="utf-8"), encoding="utf-8")
    assert config_reference.main(["--doc", str(copy), "--check"]) == 1
    assert config_reference.main(["--doc", str(copy)]) == 0
    assert config_reference.main(["--doc", str(copy), "--check"]) == 0
    row = next(line for line in copy.read_text().splitlines() if "`lodestream.example.new.setting`" in line)
    assert "| INT | `7` | >= 3 | cluster-wide | Lodestream's own | An undocumented newcomer |" in row


def test_a_parser_without_described_values_stops_generation(monkeypatch):
    def _hex_colour(value: str) -> str:
        return value

    monkeypatch.setitem(BROKER_CONFIGS, "lodestream.example.colour",
                        ConfigDef("lodestream.example.colour", _hex_colour, "#fff", "STRING"))
    try:
        config_reference.generate()
    except LookupError as exc:
        assert "_hex_colour" in str(exc)
    else:
        raise AssertionError("a parser with no description of its values was documented")


def test_check_command_and_serve_help_point_to_the_doc(capsys):
    check = subprocess.run([sys.executable, "-m", "lodestream.broker.config_reference", "--check"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    from lodestream.cli.main import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "docs/configuration.md" in capsys.readouterr().out
