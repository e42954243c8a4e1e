"""The architecture's boundaries as import-linter contracts (pyproject.toml, [tool.importlinter]).

The core imports no OCPP, serial, Modbus or IPC; the API never imports the controller, meter or OCPP
packages; the two OCPP version adapters do not import each other; root-side code (station.field)
imports only an allowlist of modules written for root. `lint-imports` checks them; these tests run
it on the tree, and on a scratch copy with one boundary broken to show each contract bites.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
ROOT_ALLOWLIST = {"station.field", "station.storage", "station.exitcodes", "station.envfile",
                  "station.network_profiles", "station.update_request", "station.trust.signature"}
"""Modules written for root (pyproject.toml says why each is there)."""


def contracts() -> dict[str, dict[str, object]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")], cwd=tree,
                          capture_output=True, text=True, timeout=300, check=False)


def test_lint_imports_keeps_every_contract() -> None:
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Contracts: {len(contracts())} kept, 0 broken" in done.stdout


BREACHES = {
    "core-is-protocol-neutral": ("station/core/scratch_breach.py", "import station.ocpp.rpc\n"),
    "api-talks-through-ipc": ("api/scratch_breach.py", "from station.meter import client\n"),
    "ocpp-version-adapters-independent": ("station/ocpp/v16.py", "\nfrom station.ocpp import v201  # scratch\n"),
    "root-side-allowlist": ("station/field/scratch_breach.py", "from station import config\n"),
}


@pytest.fixture(scope="module")
def clean_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("tree")
    for package in ("station", "api"):
        shutil.copytree(REPO / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tree / "pyproject.toml")
    return tree


@pytest.mark.parametrize("contract", sorted(BREACHES))
def test_one_boundary_breaking_import_fails_lint_imports(contract: str, clean_copy: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(clean_copy, tree)
    relative, line = BREACHES[contract]
    with (tree / relative).open("a", encoding="utf-8") as handle:
        handle.write(line)
    done = lint_imports(tree)
    assert done.returncode != 0, done.stdout
    assert f"{contracts()[contract]['name']} BROKEN" in " ".join(done.stdout.split())
    assert "1 broken" in done.stdout


def _station_modules() -> set[str]:
    """Top-level modules and packages of station, with station.trust split into its modules."""
    names = {f"station.{p.stem}" for p in (REPO / "station").glob("*.py") if p.stem not in ("__init__", "__main__")}
    names |= {f"station.{p.name}" for p in (REPO / "station").iterdir() if (p / "__init__.py").exists()}
    names.discard("station.trust")
    names |= {f"station.trust.{p.stem}" for p in (REPO / "station/trust").glob("*.py") if p.stem != "__init__"}
    return names


def test_root_side_contract_forbids_every_station_module_outside_the_allowlist() -> None:
    """The forbidden list is the allowlist's complement: a new module is forbidden to root until it is
    written for root and added to the allowlist (pyproject.toml and ROOT_ALLOWLIST, with a reason)."""
    forbidden = set(contracts()["root-side-allowlist"]["forbidden_modules"])  # type: ignore[arg-type]
    missing = sorted(_station_modules() - ROOT_ALLOWLIST - forbidden)
    assert not missing, f"add to the root-side contract's forbidden_modules (or, if written for root, the allowlist): {missing}"
    assert "api" in forbidden
