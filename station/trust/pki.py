"""X.509 for the station: trusted roots on disk, the station's own key and CSR, chain checks.

Protocol-neutral (no OCPP in here); `station/trust/credentials.py` and the OCPP security handlers use it.
`cryptography` is imported inside the functions that need it: at module level it would cost the
daemon ~8 MB of memory for work done a few times a year (tests/test_daemon_handover.py checks it
is not loaded at start).

Roots live in ``<state>/pki/roots/<type>/<SHA-256 fingerprint>.pem``; a certificate is public, the
files are 0644. The station's private keys are written 0600 with O_NOFOLLOW | O_EXCL into a temp
name and renamed, so no other user ever sees a readable key, nor can a planted link redirect it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from cryptography import x509

log = structlog.get_logger("station.trust.pki")

CSMS_ROOT = "CSMSRootCertificate"
MANUFACTURER_ROOT = "ManufacturerRootCertificate"
ROOT_TYPES = (CSMS_ROOT, MANUFACTURER_ROOT)
"""The root kinds this station keeps. V2G/MO roots and chains belong to ISO 15118, which it lacks."""
MAX_ROOTS = 20
"""CertificateStoreMaxLength: roots of all kinds together."""
MAX_CHAIN_DEPTH = 5
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
HASHES = {"SHA256": hashlib.sha256, "SHA384": hashlib.sha384, "SHA512": hashlib.sha512}


class PkiError(ValueError):
    """A certificate that cannot be used; the message says why (no key material in it)."""


# --------------------------------------------------------------------------- parsing
def load_chain(pem: str | bytes) -> list[x509.Certificate]:
    """All certificates in a PEM text, in order; PkiError when there is none or one is broken."""
    from cryptography import x509

    data = pem.encode() if isinstance(pem, str) else pem
    blocks = _PEM.findall(data)
    if not blocks:
        raise PkiError("no PEM certificate found")
    try:
        return [x509.load_pem_x509_certificate(block) for block in blocks]
    except ValueError as exc:
        raise PkiError(f"unreadable certificate: {exc}"[:200]) from None


def pem_of(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.PEM).decode()


def _der(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.DER)


def fingerprint(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives import hashes

    return cert.fingerprint(hashes.SHA256()).hex()


def is_ca(cert: x509.Certificate) -> bool:
    from cryptography import x509

    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except Exception:  # noqa: BLE001 — any failure means "not its own issuer"
        return False
    return True


def valid_at(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


# ------------------------------------------------------------------- OCSP hash data
def _public_key_bits(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING's value (without tag, length and unused-bits byte), as OCSP hashes it."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    _, body = _der_item(spki, 0)  # SubjectPublicKeyInfo ::= SEQUENCE { algorithm, subjectPublicKey }
    algorithm_end, _ = _der_item(spki, body)
    end, bits = _der_item(spki, algorithm_end)
    return spki[bits + 1:end]


def _der_item(data: bytes, at: int) -> tuple[int, int]:
    """(end offset, content offset) of the DER element starting at `at`."""
    length = data[at + 1]
    content = at + 2
    if length & 0x80:
        size = length & 0x7F
        length = int.from_bytes(data[content:content + size], "big")
        content += size
    return content + length, content


@dataclass(frozen=True)
class DerFields:
    """What GetInstalledCertificateIds / DeleteCertificate need of a certificate, read from its DER
    without `cryptography` (those messages must not load it into the daemon)."""

    serial: int
    issuer: bytes
    """The issuer Name, DER (tag and length included), as OCSP hashes it."""
    subject: bytes
    key_bits: bytes
    """The subjectPublicKey BIT STRING's value."""


def der_fields(der: bytes) -> DerFields:
    """Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version, serial, signature, issuer,
    validity, subject, subjectPublicKeyInfo, ... }, ... } (RFC 5280); PkiError when malformed."""
    try:
        _, cert = _der_item(der, 0)
        tbs_end, at = _der_item(der, cert)
        if der[at] == 0xA0:  # [0] EXPLICIT version
            at, _ = _der_item(der, at)
        serial_end, serial_at = _der_item(der, at)
        serial = int.from_bytes(der[serial_at:serial_end], "big", signed=True)
        at, _ = _der_item(der, serial_end)  # signature AlgorithmIdentifier
        issuer_end, _ = _der_item(der, at)
        issuer = der[at:issuer_end]
        at, _ = _der_item(der, issuer_end)  # validity
        subject_end, _ = _der_item(der, at)
        subject = der[at:subject_end]
        spki_end, spki_at = _der_item(der, subject_end)
        algorithm_end, _ = _der_item(der, spki_at)
        bits_end, bits_at = _der_item(der, algorithm_end)
        if not at < tbs_end or spki_end > tbs_end:
            raise IndexError
        return DerFields(serial, issuer, subject, der[bits_at + 1:bits_end])
    except IndexError:
        raise PkiError("malformed certificate") from None


def pem_blocks_der(data: bytes) -> list[bytes]:
    """The DER of every certificate in a PEM text (no parsing beyond base64)."""
    found = []
    for block in _PEM.findall(data):
        try:
            found.append(base64.b64decode(b"".join(block.splitlines()[1:-1]), validate=True))
        except (ValueError, binascii.Error):
            continue
    return found


def hash_data_der(fields: DerFields, issuer: DerFields | None = None, algorithm: str = "SHA256") -> dict[str, str]:
    """CertificateHashDataType from DER fields; `issuer` None: the certificate is its own issuer."""
    digest = HASHES[algorithm]
    return {
        "hashAlgorithm": algorithm,
        "issuerNameHash": digest(fields.issuer).hexdigest(),
        "issuerKeyHash": digest((issuer or fields).key_bits).hexdigest(),
        "serialNumber": format(fields.serial, "x"),
    }


def hash_data(cert: x509.Certificate, issuer: x509.Certificate | None = None, algorithm: str = "SHA256") -> dict[str, str]:
    """CertificateHashDataType as OCPP (and RFC 6960) define it; a root is its own issuer."""
    digest = HASHES[algorithm]
    issuer = issuer or cert
    return {
        "hashAlgorithm": algorithm,
        "issuerNameHash": digest(cert.issuer.public_bytes()).hexdigest(),
        "issuerKeyHash": digest(_public_key_bits(issuer)).hexdigest(),
        "serialNumber": format(cert.serial_number, "x"),
    }


def same_hash_data(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal CertificateHashData; the fields are case-insensitive strings, serials without leading zeroes."""
    def norm(d: dict[str, Any]) -> tuple[str, ...]:
        serial = str(d.get("serialNumber", "")).lower().lstrip("0") or "0"
        return (str(d.get("hashAlgorithm", "")).upper(), str(d.get("issuerNameHash", "")).lower(),
                str(d.get("issuerKeyHash", "")).lower(), serial)
    return norm(a) == norm(b)


# ------------------------------------------------------------------------ chains
def verify_chain(chain: Sequence[x509.Certificate], roots: Iterable[x509.Certificate], now: datetime) -> str | None:
    """Why `chain` (leaf first, then any intermediates) does not lead to one of `roots`; None when it does.

    Every certificate on the path, the root included, must be valid at `now`; each one must be
    signed by the next (a signature check, not a name match alone) and every issuer must be a CA.
    """
    trusted = list(roots)
    if not trusted:
        return "no trusted root installed"
    path = list(chain)
    cert = path[0]
    for depth in range(MAX_CHAIN_DEPTH + 1):
        if not valid_at(cert, now):
            return f"certificate {_name(cert)} outside its validity period"
        for root in trusted:
            if root.subject == cert.issuer and _signed_by(cert, root):
                if not valid_at(root, now):
                    return f"root {_name(root)} outside its validity period"
                return None
        issuer = next((c for c in path[depth + 1:] if c.subject == cert.issuer and _signed_by(cert, c)), None)
        if issuer is None:
            return f"certificate {_name(cert)} is not signed by an installed root"
        if not is_ca(issuer):
            return f"issuer {_name(issuer)} is not a CA"
        cert = issuer
    return "certificate chain too long"


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # noqa: BLE001 — wrong key, unsupported algorithm: not its issuer
        return False
    return True


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()[:80] or format(cert.serial_number, "x")


def common_name(cert: x509.Certificate) -> str | None:
    from cryptography.x509.oid import NameOID

    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


# ------------------------------------------------------------------- private keys
def write_private(path: Path, data: bytes) -> None:
    """Write a secret file 0600 (temp name, fsync, rename); never follows a planted link."""
    _write(path, data, 0o600, 0o700)


def write_public(path: Path, data: bytes) -> None:
    _write(path, data, 0o644, 0o755)


def _write(path: Path, data: bytes, mode: int, dir_mode: int) -> None:
    from station.storage.durable import durable_write

    path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
    durable_write(path, data, mode=mode)  # temp, fsync, rename, fsync dir: survives a power cut


def new_key_pem() -> bytes:
    """A fresh EC P-256 key (A00.FR.503: >= 224 bits), PKCS#8 PEM, made on the device."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def csr_pem(key_pem: bytes, common_name_: str, organization: str) -> str:
    """PKCS#10 request, PEM (A02.FR.03): CN = the station id, O = the operator's organization name."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = serialization.load_pem_private_key(key_pem, password=None)
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, common_name_),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
    ])
    request = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())  # type: ignore[arg-type]
    return request.public_bytes(serialization.Encoding.PEM).decode()


def key_matches(cert: x509.Certificate, key_pem: bytes) -> bool:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = serialization.load_pem_private_key(key_pem, password=None)
    mine = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    theirs = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return mine == theirs


# ------------------------------------------------------------------- the root store
@dataclass(frozen=True)
class InstalledRoot:
    kind: str
    path: Path
    der: bytes

    @property
    def fields(self) -> DerFields:
        return der_fields(self.der)

    @property
    def certificate(self) -> Any:
        """The parsed x509.Certificate (loads `cryptography`: for checks, not for listing)."""
        from cryptography import x509

        return x509.load_der_x509_certificate(self.der)

    def hash_data(self, algorithm: str = "SHA256", issuer: InstalledRoot | None = None) -> dict[str, str]:
        return hash_data_der(self.fields, issuer.fields if issuer is not None else None, algorithm)


class RootStore:
    """Trusted roots by kind, in files; see the module docstring."""

    def __init__(self, directory: Path, *, max_roots: int = MAX_ROOTS) -> None:
        self.directory = directory
        self.max_roots = max_roots

    def _dir(self, kind: str) -> Path:
        if kind not in ROOT_TYPES:
            raise PkiError(f"{kind} is not kept by this station")
        return self.directory / kind

    def roots(self, kind: str) -> list[InstalledRoot]:
        folder = self._dir(kind)
        found = []
        for path in sorted(folder.glob("*.pem")) if folder.is_dir() else []:
            try:
                der = pem_blocks_der(path.read_bytes())[0]
                der_fields(der)
            except (OSError, IndexError, PkiError) as exc:
                log.warning("pki: unreadable root ignored", path=str(path), error=exc.__class__.__name__)
                continue
            found.append(InstalledRoot(kind, path, der))
        return found

    def issuer_of(self, root: InstalledRoot) -> InstalledRoot | None:
        """The installed root whose subject is this root's issuer (a successor's predecessor); None: itself."""
        fields = root.fields
        if fields.issuer == fields.subject:
            return None
        return next((r for k in ROOT_TYPES for r in self.roots(k) if r.fields.subject == fields.issuer), None)

    def hash_data(self, root: InstalledRoot, algorithm: str = "SHA256") -> dict[str, str]:
        return root.hash_data(algorithm, self.issuer_of(root))

    def count(self) -> int:
        return sum(len(list(self._dir(k).glob("*.pem"))) for k in ROOT_TYPES if self._dir(k).is_dir())

    def pem(self, kind: str) -> str:
        """All roots of a kind as one PEM text (for an SSL context's cadata); '' when none.

        Read as text, without parsing: this runs before every connection attempt and must not load
        `cryptography` into the daemon."""
        folder = self._dir(kind)
        texts = []
        for path in sorted(folder.glob("*.pem")) if folder.is_dir() else []:
            try:
                texts.append(path.read_text())
            except OSError:
                continue
        return "".join(texts)

    def install(self, kind: str, pem: str, now: datetime) -> InstalledRoot:
        """Add one root certificate; PkiError says why it is refused (M05.FR.03/06)."""
        certs = load_chain(pem)
        if len(certs) != 1:
            raise PkiError("expected exactly one certificate")
        cert = certs[0]
        if not is_ca(cert):
            raise PkiError("not a CA certificate (basicConstraints CA:TRUE missing)")
        if not valid_at(cert, now):
            raise PkiError("certificate outside its validity period")
        path = self._dir(kind) / f"{fingerprint(cert)}.pem"
        der = _der(cert)
        if path.exists():
            return InstalledRoot(kind, path, der)
        if self.count() >= self.max_roots:
            raise PkiError(f"certificate store full ({self.max_roots} roots)")
        write_public(path, pem_of(cert).encode())
        return InstalledRoot(kind, path, der)

    def install_successor(self, pem: str, now: datetime) -> InstalledRoot:
        """AdditionalRootCertificateCheck (M05.FR.08-11): one CSMS root at a time; a new one must be
        signed by the one it replaces, which stays as the fallback until a connection proved the new one."""
        cert = load_chain(pem)[0]
        current = [r for r in self.roots(CSMS_ROOT) if r.path != self.fallback_path()]
        if current and not any(cert.issuer == r.certificate.subject and _signed_by(cert, r.certificate) for r in current):
            raise PkiError("the new CSMS root is not signed by the installed one (AdditionalRootCertificateCheck)")
        installed = self.install(CSMS_ROOT, pem, now)
        old_fallback = self.fallback_path()
        if old_fallback is not None and old_fallback != installed.path:
            old_fallback.unlink(missing_ok=True)
        others = [r for r in current if r.path != installed.path]
        for extra in others[1:]:
            extra.path.unlink(missing_ok=True)
        marker = self.directory / ".fallback"
        if others:
            write_public(marker, others[0].path.name.encode())
        else:
            marker.unlink(missing_ok=True)
        return installed

    def fallback_path(self) -> Path | None:
        """The previous CSMS root kept while its successor is unproven (None when there is none)."""
        try:
            name = (self.directory / ".fallback").read_text().strip()
        except OSError:
            return None
        path = self._dir(CSMS_ROOT) / name
        return path if name and path.exists() else None

    def drop_fallback(self) -> None:
        """M05.FR.12: the new root verified the CSMS; the old one goes."""
        path = self.fallback_path()
        if path is not None:
            path.unlink(missing_ok=True)
            log.warning("pki: previous CSMS root removed; its successor verified the CSMS", file=path.name)
        (self.directory / ".fallback").unlink(missing_ok=True)

    def find(self, wanted: dict[str, Any]) -> InstalledRoot | None:
        algorithm = str(wanted.get("hashAlgorithm", "SHA256")).upper()
        if algorithm not in HASHES:
            return None
        for kind in ROOT_TYPES:
            for root in self.roots(kind):
                if same_hash_data(self.hash_data(root, algorithm), wanted):
                    return root
        return None

    def remove(self, root: InstalledRoot) -> None:
        from station.storage.durable import fsync_directory

        root.path.unlink()
        fsync_directory(root.path.parent)  # a deleted root stays deleted after a power cut

    def seed(self, kind: str, bundle: Path | None) -> int:
        """Copy the certificates of a provisioned bundle file into the store, once per bundle content.

        The store is then what the CSMS sees and manages (GetInstalledCertificateIds, Delete); a
        changed bundle (re-provisioning) adds its certificates again. Done on the PEM text (file
        name = SHA-256 of the DER, as `fingerprint`), so a daemon start never loads `cryptography`;
        a provisioned bundle is trusted as given.
        """
        if bundle is None:
            return 0
        try:
            data = bundle.read_bytes()
        except OSError as exc:
            log.warning("pki: provisioned bundle unreadable", path=str(bundle), error=exc.__class__.__name__)
            return 0
        marker = self.directory / f".seeded-{kind}"
        digest = hashlib.sha256(data).hexdigest()
        try:
            if marker.read_text().strip() == digest:
                return 0
        except OSError:
            pass
        added = 0
        for block in _PEM.findall(data):
            body = b"".join(block.splitlines()[1:-1])
            try:
                der = base64.b64decode(body, validate=True)
            except (ValueError, binascii.Error):
                continue
            path = self._dir(kind) / f"{hashlib.sha256(der).hexdigest()}.pem"
            if not path.exists() and self.count() < self.max_roots:
                write_public(path, block + b"\n")
                added += 1
        write_public(marker, digest.encode())
        return added
