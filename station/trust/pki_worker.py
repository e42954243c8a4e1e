"""Certificate work that needs `cryptography`, done in a short-lived child process.

Why: once imported, `cryptography` stays in the daemon's memory (~10 MB resident) until it
restarts, and the daemon's budget is 40 MB. A renewal, a CertificateSigned check or an installed
root happen a few times a year; a child process (a few hundred milliseconds) keeps the daemon
itself small. The child works on the files of the certificate store and the station's key
directory and answers one JSON document; it writes nothing to stdout besides that.

    answer = await pki_worker.call("install_root", directory=..., kind=..., pem=..., now=...)

Only the functions in `FUNCTIONS` can be called.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

TIMEOUT_S = 60.0


class WorkerError(Exception):
    """The child failed (crashed, timed out, answered nonsense); the message is for the log."""


async def call(function: str, **kwargs: Any) -> Any:
    """Run `FUNCTIONS[function](**kwargs)` in a child interpreter; its result, or PkiError / WorkerError."""
    from station.trust.pki import PkiError

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "station.trust.pki_worker", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(json.dumps({"function": function, "kwargs": kwargs}).encode()),
                                          TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise WorkerError(f"{function}: no answer within {TIMEOUT_S:g} s") from None
    try:
        answer = json.loads(out)
    except ValueError:
        raise WorkerError(f"{function}: exit {proc.returncode}: {err.decode(errors='replace')[-300:]}") from None
    if "pki_error" in answer:
        raise PkiError(answer["pki_error"])
    if "error" in answer:
        raise WorkerError(f"{function}: {answer['error']}")
    return answer["result"]


# ------------------------------------------------------------------------ in the child
def install_root(directory: str, kind: str, pem: str, now: str, successor: bool = False) -> dict[str, str]:
    from station.trust import pki

    store = pki.RootStore(Path(directory))
    when = datetime.fromisoformat(now)
    root = store.install_successor(pem, when) if successor else store.install(kind, pem, when)
    return {"path": str(root.path), "subject": root.certificate.subject.rfc4514_string()}


def make_csr(pending: str, station_id: str, organization: str, fresh: bool) -> str:
    from station.trust import pki

    path = Path(pending)
    key = None if fresh or not path.exists() else path.read_bytes()
    if key is None:
        key = pki.new_key_pem()
        pki.write_private(path, key)
    return pki.csr_pem(key, station_id, organization)


def store_signed(chain: str, station_dir: str, station_id: str, roots_dir: str, bundle: str | None, now: str) -> dict[str, str]:
    """A02.FR.06: check a CertificateSigned chain and keep it as the candidate generation; PkiError says why not."""
    from station.trust import pki

    certs = pki.load_chain(chain)
    leaf = certs[0]
    station = Path(station_dir)
    pending = station / "pending.key"
    try:
        key = pending.read_bytes()
    except FileNotFoundError:
        raise pki.PkiError("no certificate signing request outstanding") from None
    when = datetime.fromisoformat(now)
    if not pki.key_matches(leaf, key):
        raise pki.PkiError("certificate does not match the key of the signing request")
    if pki.common_name(leaf) != station_id:
        raise pki.PkiError("certificate common name is not the station id")
    if when > leaf.not_valid_after_utc:
        raise pki.PkiError("certificate expired")
    trusted = [r.certificate for r in pki.RootStore(Path(roots_dir)).roots(pki.CSMS_ROOT)]
    if not trusted and bundle:
        try:
            trusted = pki.load_chain(Path(bundle).read_bytes())
        except (OSError, pki.PkiError):
            trusted = []
    # Chain check at the certificate's own start: one valid from a little later is kept for then.
    problem = pki.verify_chain(certs, trusted, max(when, leaf.not_valid_before_utc))
    if problem:
        raise pki.PkiError(problem)
    from station.trust import generations

    try:
        # Key and chain as one new generation, whole or not at all; the one in force is untouched.
        generations.add_candidate(station, "".join(pki.pem_of(c) for c in certs).encode(), key)
        pending.unlink()
    except OSError as exc:
        raise pki.PkiError(f"cannot store the certificate ({exc.__class__.__name__})") from None
    return {"serial": format(leaf.serial_number, "x"), "not_after": leaf.not_valid_after_utc.isoformat()}


def check_signing_certificate(pem: str, roots: str, now: str) -> str | None:
    """Why a firmware signing certificate cannot be used (L01.FR.12), or None."""
    from station.trust import firmware

    return firmware.check_certificate(pem, datetime.fromisoformat(now), [roots] if roots.strip() else [])


def verify_firmware_signature(pem: str, signature: str, sha256: str, path: str) -> str | None:
    """Why the signature over the downloaded artefact does not verify, or None."""
    from station.trust import signature as checks

    return checks.verify_signature(pem, signature, bytes.fromhex(sha256), Path(path))


FUNCTIONS = {"install_root": install_root, "make_csr": make_csr, "store_signed": store_signed,
             "check_signing_certificate": check_signing_certificate, "verify_firmware_signature": verify_firmware_signature}


def main() -> int:
    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))  # stdout carries the answer
    from station.trust.pki import PkiError

    try:
        request = json.loads(sys.stdin.read())
        result = FUNCTIONS[request["function"]](**request["kwargs"])
        answer: dict[str, Any] = {"result": result}
    except PkiError as exc:
        answer = {"pki_error": str(exc)}
    except Exception as exc:  # noqa: BLE001 — reported to the parent, which logs it
        answer = {"error": f"{exc.__class__.__name__}: {exc}"[:300]}
    sys.stdout.write(json.dumps(answer))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
