"""Firmware signature and signing-certificate checks, shared by the daemon's pre-check and root's decision.

`station-update` runs as root and imports this module, so it imports nothing of the daemon: only the
standard library and `cryptography` (docs/security.md, the import-linter contract for
`station.field`). The daemon runs the same checks in its `pki_worker` child against the roots the
CSMS installed; the root side runs them against the roots root provisioned in
`/etc/station/firmware-roots/`, and only that answer decides what is installed.

A signing certificate is accepted when `cryptography`'s X.509 path validation
(`cryptography.x509.verification`, RFC 5280 path building) finds a path to one of the anchors at the
given time, with these rules on top of its core checks (signatures, validity dates, path length):

- every issuer is a CA: BasicConstraints with cA asserted and KeyUsage with keyCertSign;
- the signing certificate carries the code-signing extended key usage (1.3.6.1.5.5.7.3.3).

A certificate issued by the manufacturer for anything else (a station's TLS client certificate, say)
therefore cannot sign a release.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

ANCHORS_MAX_BYTES = 256 * 1024


def verify_signature(pem: str, signature_b64: str, sha256: bytes, path: Path) -> str | None:
    """Why the signature over the artefact does not verify (None: it does).

    RSA (PKCS#1 v1.5 or PSS) and ECDSA over SHA-256 use the digest taken while downloading;
    Ed25519 signs the whole artefact.
    """
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature as _BadSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    try:
        signature = base64.b64decode(signature_b64, validate=True)
        key = x509.load_pem_x509_certificate(pem.encode()).public_key()
    except (ValueError, binascii.Error) as exc:
        return f"unreadable signature or certificate: {exc.__class__.__name__}"
    prehashed = Prehashed(hashes.SHA256())
    try:
        if isinstance(key, rsa.RSAPublicKey):
            try:
                key.verify(signature, sha256, padding.PKCS1v15(), prehashed)
            except _BadSignature:
                key.verify(signature, sha256, padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.AUTO), prehashed)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, sha256, ec.ECDSA(prehashed))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, path.read_bytes())
        else:
            return f"unsupported signing key {key.__class__.__name__}"
    except _BadSignature:
        return "signature does not match the artefact"
    return None


def chain_problem(chain_pem: str, anchors_pem: Sequence[str], now: datetime) -> str | None:
    """Why the signing certificate (`chain_pem`: leaf first, then any intermediates) does not chain to
    one of `anchors_pem` as a code-signing certificate at `now`; None when it does."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID
    from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store, VerificationError

    try:
        chain = x509.load_pem_x509_certificates(chain_pem.encode())
    except ValueError:
        return "unreadable signing certificate"
    anchors: list[x509.Certificate] = []
    for text in anchors_pem:
        try:
            anchors += x509.load_pem_x509_certificates(text.encode())
        except ValueError:
            continue  # one unreadable anchor file does not disable the others
    if not anchors:
        return "no manufacturer root certificate to check it against"

    def issuer_is_ca(_policy: object, _cert: x509.Certificate, value: x509.BasicConstraints) -> None:
        if not value.ca:
            raise ValueError("an issuer is not a CA (BasicConstraints cA is not asserted)")

    def issuer_signs_certificates(_policy: object, _cert: x509.Certificate, value: x509.KeyUsage) -> None:
        if not value.key_cert_sign:
            raise ValueError("an issuer may not sign certificates (KeyUsage keyCertSign is missing)")

    def code_signing(_policy: object, _cert: x509.Certificate, value: x509.ExtendedKeyUsage) -> None:
        if ExtendedKeyUsageOID.CODE_SIGNING not in value:
            raise ValueError("the signing certificate is not for code signing (extended key usage)")

    ca_policy = (ExtensionPolicy.permit_all()
                 .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, issuer_is_ca)
                 .require_present(x509.KeyUsage, Criticality.AGNOSTIC, issuer_signs_certificates))
    ee_policy = ExtensionPolicy.permit_all().require_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, code_signing)
    verifier = (PolicyBuilder().store(Store(anchors)).time(now)
                .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy).build_client_verifier())
    try:
        verifier.verify(chain[0], chain[1:])
    except VerificationError as exc:
        return _reason(str(exc))
    return None


def _reason(text: str) -> str:
    """cryptography's message, without the certificate dump it appends, in words an operator reads."""
    text = text.split(" (encountered processing", 1)[0].removeprefix("validation failed: ")
    text = text.removeprefix("candidates exhausted: ").removeprefix("Python extension validator failed: ValueError: ")
    if text in ("all candidates exhausted with no interior errors", "signature does not match"):
        return "it does not chain to an installed manufacturer root"
    if "not valid at validation time" in text:
        return "a certificate of the chain is outside its validity period (expired or not yet valid)"
    if "2.5.29.37" in text:
        return "the signing certificate is not for code signing (no extended key usage)"
    if "2.5.29.15" in text:
        return "an issuer may not sign certificates (no KeyUsage)"
    if "2.5.29.19" in text or "basicConstraints.cA" in text:
        return "an issuer is not a CA (BasicConstraints)"
    return text[:200]
