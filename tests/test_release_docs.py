"""The docs the units name travel with the release: every `Documentation=file:` path is installed by the wheel.

install.sh and station-update install the release wheel into releases/<version>/venv (current →
that release); setuptools' data-files land under the venv's prefix. The wheel itself is not built
here (no build backend offline); pyproject.toml's data-files are read as setuptools reads them.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from tests.test_systemd_units import UNITS, unit_keys

REPO = Path(__file__).resolve().parents[1]
VENV_OF_CURRENT = "/opt/station/current/venv/"


def installed_data_files() -> set[str]:
    data_files = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    return {f"{target}/{path.name}" for target, patterns in data_files.items()
            for pattern in patterns for path in REPO.glob(pattern)}


def test_every_units_documentation_file_is_installed_with_the_release() -> None:
    installed = installed_data_files()
    named = [doc for unit in UNITS for doc in unit_keys(unit).get("Documentation", []) if doc.startswith("file:")]
    assert len(named) >= len(UNITS)
    for doc in named:
        path = doc.removeprefix("file:")
        assert path.startswith(VENV_OF_CURRENT), doc
        assert path.removeprefix(VENV_OF_CURRENT) in installed, doc


def test_every_doc_and_its_images_are_installed_with_the_release() -> None:
    installed = installed_data_files()
    assert {f"share/doc/ocpp-station/{p.name}" for p in (REPO / "docs").glob("*.md")} <= installed
    assert {f"share/doc/ocpp-station/img/{p.name}" for p in (REPO / "docs/img").glob("*.png")} <= installed
