"""The documentation names every setting the code reads."""

from pathlib import Path

from station.config import Settings, variable_of

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_configuration_reference_lists_every_variable() -> None:
    text = (DOCS / "configuration.md").read_text()
    missing = [variable_of(n) for n in Settings.model_fields if f"`{variable_of(n)}`" not in text]
    assert missing == []


def test_ocpp_doc_lists_every_device_model_variable_and_16_key(tmp_path: Path) -> None:
    from station.devtools.variables_table import station_model

    text = (DOCS / "ocpp.md").read_text()
    model = station_model(tmp_path / "station.db")
    missing = []
    for entry in model.entries(include16=True):
        v = entry.variable
        name = f"| {v.name}" + (f"[{v.instance}]" if v.instance else "") + " |"
        if (v.key16 and f"| {v.key16} |" not in text) or (not v.only16 and name not in text):
            missing.append(entry.path)
    assert missing == [], "regenerate the table: python -m station.devtools.variables_table"


def test_ocpp_doc_message_tables_name_every_message_the_station_handles() -> None:
    from station.ocpp.v16 import V16Session
    from station.ocpp.v201 import V201Session

    text = (DOCS / "ocpp.md").read_text()
    tables = text[text.index("## Messages"):text.index("\n## ", text.index("## Messages") + 1)]
    missing = []
    for cls in (V201Session, V16Session):
        for name in dir(cls):
            action = getattr(getattr(cls, name), "_on_action", None)
            if action and action not in tables:
                missing.append(f"{cls.__name__}: {action}")
    assert missing == []
