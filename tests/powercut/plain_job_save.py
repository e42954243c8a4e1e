"""`python -m tests.powercut.plain_job_save run`: the daemon with ONE durable write made plain, on purpose.

The firmware request is saved as before issue 23 (a temp file renamed into place, no fsync of the
file or of its directory). The power-cut tests run it to show that they catch such a write: an
UpdateFirmware the station answered Accepted is forgotten after a cut.
"""

from __future__ import annotations

import json
import os
from typing import Any

from station.trust import firmware
from station.trust.firmware import FirmwareRequest, FirmwareUpdater


def plain_save_job(self: FirmwareUpdater, request: FirmwareRequest) -> None:
    data: dict[str, Any] = {
        "location": request.location, "retrieve_at": request.retrieve_at.isoformat(), "request_id": request.request_id,
        "install_at": request.install_at.isoformat() if request.install_at else None,
        "signing_certificate": request.signing_certificate, "signature": request.signature,
        "retries": request.retries, "retry_interval_s": request.retry_interval_s,
    }
    self.directory.mkdir(parents=True, exist_ok=True)
    tmp = self.directory / ".job.json.new"
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        json.dump(data, handle)
    os.replace(tmp, self.directory / "job.json")


firmware.FirmwareUpdater._save_job = plain_save_job  # type: ignore[method-assign]

if __name__ == "__main__":
    from station.handover import console

    raise SystemExit(console())
