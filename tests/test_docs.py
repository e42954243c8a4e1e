"""The documentation names every setting the code reads."""

from pathlib import Path

from station.config import Settings, variable_of

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_configuration_reference_lists_every_variable() -> None:
    text = (DOCS / "configuration.md").read_text()
    missing = [variable_of(n) for n in Settings.model_fields if f"`{variable_of(n)}`" not in text]
    assert missing == []
