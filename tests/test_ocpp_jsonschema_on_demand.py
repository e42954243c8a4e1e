"""jsonschema is imported only when the `ocpp` library really validates (start-up time, resident memory)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ocpp.exceptions import FormatViolationError, OCPPError, TypeConstraintViolationError
from ocpp.messages import Call

from station.ocpp import schema


def _in_fresh_interpreter(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout


def test_the_daemon_starts_without_jsonschema() -> None:
    out = _in_fresh_interpreter("import sys, station.daemon, station.ocpp.rpc; print('jsonschema' in sys.modules)")
    assert out.strip() == "False"


def test_a_valid_payload_is_judged_without_jsonschema() -> None:
    out = _in_fresh_interpreter(
        "import sys\nfrom station.ocpp import schema\nfrom ocpp.messages import Call\n"
        "schema.validate_payload(Call('1', 'Heartbeat', {}), '2.0.1')\nprint('jsonschema' in sys.modules)")
    assert out.strip() == "False"


def test_an_invalid_payload_still_gets_the_librarys_error() -> None:
    with pytest.raises(OCPPError) as raised:
        schema.validate_payload(Call("1", "BootNotification", {"reason": "PowerUp"}), "2.0.1")
    assert "chargingStation" in str(raised.value.details)
    with pytest.raises(TypeConstraintViolationError):
        schema.validate_payload(Call("2", "StatusNotification", {"timestamp": "2026-01-01T00:00:00Z",
                                                                 "connectorStatus": "Available", "evseId": "one",
                                                                 "connectorId": 1}), "2.0.1")
    with pytest.raises(FormatViolationError):
        schema.validate_payload(Call("3", "Heartbeat", {"unexpected": 1}), "2.0.1")


async def test_warming_up_1_6_builds_the_librarys_own_validators() -> None:
    await schema.warm_up("1.6")
    assert "jsonschema" in sys.modules
    schema.validate_payload(Call("4", "RemoteStartTransaction", {"idTag": "TAG", "connectorId": 1}), "1.6")


def test_a_library_that_needs_more_of_jsonschema_is_imported_plainly(tmp_path: Path) -> None:
    """An `ocpp` release importing more than the two stand-ins must not stop the daemon from starting."""
    fake = tmp_path / "ocpp"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "messages.py").write_text("import jsonschema.validators\nVALIDATORS = jsonschema.validators\n")
    code = ("import sys; sys.path.insert(0, %r); from station.ocpp import jsonschema_on_demand as j; j.install(); "
            "import ocpp.messages; print(ocpp.messages.VALIDATORS.__name__)" % str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "jsonschema.validators"
