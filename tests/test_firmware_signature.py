"""Which signing certificates may sign a release (`station.trust.signature`, the root side's rules).

Each refusal is a certificate a real manufacturer PKI could hand out by mistake, or one an attacker
holds: a station's own TLS certificate, a CA that may not issue, the wrong usage, the wrong dates.
"""

from __future__ import annotations

from datetime import UTC, datetime

from station.trust import signature
from tests.pki_helpers import make_ca, make_firmware_signer, pem


def problem(flaw: str | None = None) -> str | None:
    signer = make_firmware_signer(flaw=flaw)
    return signature.chain_problem(signer.certificate_pem, [signer.root_pem], datetime.now(UTC))


def test_a_code_signing_certificate_issued_by_the_manufacturer_root_is_accepted() -> None:
    assert problem() is None


def test_a_code_signing_certificate_under_an_intermediate_ca_is_accepted() -> None:
    root = make_ca("Orge root", days=30)
    signer = make_firmware_signer(root=make_ca("Orge signing CA", issuer=root, days=30))
    assert signature.chain_problem(signer.certificate_pem + signer.root_pem, [pem(root[1])], datetime.now(UTC)) is None


def test_an_issuer_that_is_not_a_ca_is_refused() -> None:
    assert "not a CA" in (problem("ca-false-issuer") or "")


def test_a_tls_client_certificate_of_the_manufacturer_cannot_issue_a_signing_certificate() -> None:
    assert "not a CA" in (problem("tls-client-issuer") or "")


def test_an_issuer_without_key_cert_sign_is_refused() -> None:
    assert "keyCertSign" in (problem("no-key-cert-sign") or "")


def test_a_certificate_without_the_code_signing_usage_is_refused() -> None:
    assert "code signing" in (problem("no-code-signing") or "")


def test_an_expired_signing_certificate_is_refused() -> None:
    assert "validity period" in (problem("expired") or "")


def test_a_signing_certificate_not_yet_valid_is_refused() -> None:
    assert "validity period" in (problem("not-yet-valid") or "")


def test_a_chain_longer_than_a_path_length_constraint_allows_is_refused() -> None:
    assert "path length" in (problem("path-length") or "")


def test_a_certificate_under_an_unknown_root_is_refused() -> None:
    signer = make_firmware_signer()
    other = make_firmware_signer()
    assert "does not chain" in (signature.chain_problem(signer.certificate_pem, [other.root_pem], datetime.now(UTC)) or "")


def test_without_any_anchor_nothing_is_accepted() -> None:
    assert signature.chain_problem(make_firmware_signer().certificate_pem, [], datetime.now(UTC)) is not None


def test_an_unreadable_anchor_does_not_disable_the_others() -> None:
    signer = make_firmware_signer()
    assert signature.chain_problem(signer.certificate_pem, ["not a certificate", signer.root_pem], datetime.now(UTC)) is None
