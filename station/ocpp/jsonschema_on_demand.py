"""jsonschema for the `ocpp` library only when the library really validates.

`ocpp.messages` imports jsonschema at module level: ~40 ms of every start-up and ~4 MB of
resident memory (docs/performance.md) in a daemon that validates with compiled validators
(station/ocpp/schema.py) and asks the library only to word an error, or for the three 1.6
messages it parses with `decimal.Decimal`. Until the library imports it lazily, `install()`
imports `ocpp.messages` with two stand-ins in the place of jsonschema's names; the first
validator the library builds imports the real jsonschema and puts the real names back, before
any of them is used (the library looks both up at call time).
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _Draft4Validator:
    """Stands in for `jsonschema.Draft4Validator` until the library builds its first validator."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        return load().Draft4Validator(*args, **kwargs)


class _ValidationError(Exception):
    """Stands in for `jsonschema.exceptions.ValidationError`; never raised (no validator exists yet)."""


def install() -> None:
    """Import `ocpp.messages` without jsonschema; a no-op when either is already imported."""
    if "ocpp.messages" in sys.modules or "jsonschema" in sys.modules:
        return
    package = types.ModuleType("jsonschema")
    package.__path__ = []  # type: ignore[attr-defined]  # a package, so `jsonschema.exceptions` resolves
    package.Draft4Validator = _Draft4Validator  # type: ignore[attr-defined]
    exceptions = types.ModuleType("jsonschema.exceptions")
    exceptions.ValidationError = _ValidationError  # type: ignore[attr-defined]
    sys.modules["jsonschema"], sys.modules["jsonschema.exceptions"] = package, exceptions
    try:
        import ocpp.messages  # noqa: F401 — binds the stand-ins
    except Exception:  # noqa: BLE001 — a library release that needs more of jsonschema: plain import
        sys.modules.pop("ocpp.messages", None)
        fell_back = True
    else:
        fell_back = False
    finally:
        del sys.modules["jsonschema"], sys.modules["jsonschema.exceptions"]  # anyone else: the real one
    if fell_back:  # costs the memory this module saves, never the daemon's start
        import ocpp.messages  # noqa: F401,F811


def load() -> Any:
    """The real jsonschema, with `ocpp.messages` pointed at it."""
    import jsonschema
    import jsonschema.exceptions
    import ocpp.messages

    ocpp.messages.Draft4Validator = jsonschema.Draft4Validator  # type: ignore[attr-defined]
    ocpp.messages.SchemaValidationError = jsonschema.exceptions.ValidationError  # type: ignore[attr-defined]
    return jsonschema
