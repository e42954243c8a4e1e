"""station.trust.pki: chain checks, hash data, the root store and the station's key files."""

from __future__ import annotations

import datetime as dt
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp

from station.trust import pki
from tests.pki_helpers import make_ca, make_leaf, pem

def now() -> dt.datetime:
    """The time of the check: taken when the test runs (the certificates are made then, not at import)."""
    return dt.datetime.now(dt.UTC)


def test_a_leaf_signed_through_an_intermediate_chains_to_its_root() -> None:
    root = make_ca("Root")
    intermediate = make_ca("Intermediate", issuer=root)
    _, leaf = make_leaf(intermediate, "CP")
    assert pki.verify_chain([leaf, intermediate[1]], [root[1]], now()) is None


def test_a_chain_missing_its_intermediate_is_refused() -> None:
    root = make_ca("Root")
    _, leaf = make_leaf(make_ca("Intermediate", issuer=root), "CP")
    assert "not signed by an installed root" in (pki.verify_chain([leaf], [root[1]], now()) or "")


def test_a_root_with_the_right_name_but_another_key_is_not_trusted() -> None:
    real = make_ca("Operator root")
    impostor = make_ca("Operator root")  # same subject, different key
    _, leaf = make_leaf(real, "CP")
    assert pki.verify_chain([leaf], [impostor[1]], now()) is not None


def test_an_expired_leaf_is_refused() -> None:
    root = make_ca("Root", days=30, start=now() - dt.timedelta(days=10))
    _, leaf = make_leaf(root, "CP", start=now() - dt.timedelta(days=5), days=1)
    assert "validity" in (pki.verify_chain([leaf], [root[1]], now()) or "")


def test_an_issuer_that_is_no_ca_breaks_the_chain() -> None:
    root = make_ca("Root")
    not_ca_key, not_ca = make_leaf(root, "Just a leaf")
    _, leaf = make_leaf((not_ca_key, not_ca), "CP")
    assert "not a CA" in (pki.verify_chain([leaf, not_ca], [root[1]], now()) or "")


def test_hash_data_of_a_leaf_uses_its_issuers_key_like_ocsp() -> None:
    root = make_ca("Root")
    _, leaf = make_leaf(root, "CP")
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf, root[1], hashes.SHA384()).build()
    data = pki.hash_data(leaf, root[1], "SHA384")
    assert data["issuerNameHash"] == request.issuer_name_hash.hex()
    assert data["issuerKeyHash"] == request.issuer_key_hash.hex()
    assert data["serialNumber"] == format(leaf.serial_number, "x") and not data["serialNumber"].startswith("0")


def test_hash_data_read_from_the_der_matches_the_ocsp_reckoning() -> None:
    root = make_ca("Root")
    successor = make_ca("Successor", issuer=root)
    request = ocsp.OCSPRequestBuilder().add_certificate(successor[1], root[1], hashes.SHA512()).build()
    data = pki.hash_data_der(pki.der_fields(pki._der(successor[1])), pki.der_fields(pki._der(root[1])), "SHA512")
    assert data["issuerNameHash"] == request.issuer_name_hash.hex()
    assert data["issuerKeyHash"] == request.issuer_key_hash.hex()
    assert data["serialNumber"] == format(successor[1].serial_number, "x")


def test_listing_and_finding_roots_do_not_load_cryptography(tmp_path: Path) -> None:
    root = make_ca("Root")[1]
    pki.RootStore(tmp_path).install(pki.CSMS_ROOT, pem(root), now())
    wanted = pki.hash_data(root)
    code = (f"import sys; from pathlib import Path; from station.trust import pki; s = pki.RootStore(Path({str(tmp_path)!r})); "
            f"[r] = s.roots(pki.CSMS_ROOT); assert s.hash_data(r) == {wanted!r}; assert s.find({wanted!r}) == r; "
            "print('cryptography' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_hash_data_compare_ignores_case_and_leading_zeroes() -> None:
    a = {"hashAlgorithm": "SHA256", "issuerNameHash": "ABCD", "issuerKeyHash": "ef01", "serialNumber": "0fff"}
    b = {"hashAlgorithm": "SHA256", "issuerNameHash": "abcd", "issuerKeyHash": "EF01", "serialNumber": "FFF"}
    assert pki.same_hash_data(a, b)


def test_the_store_keeps_one_file_per_root_and_stops_at_its_limit(tmp_path: Path) -> None:
    store = pki.RootStore(tmp_path, max_roots=2)
    first = make_ca("One")[1]
    store.install(pki.CSMS_ROOT, pem(first), now())
    store.install(pki.CSMS_ROOT, pem(first), now())  # the same again: no second file
    store.install(pki.MANUFACTURER_ROOT, pem(make_ca("Two")[1]), now())
    assert store.count() == 2
    with pytest.raises(pki.PkiError, match="full"):
        store.install(pki.CSMS_ROOT, pem(make_ca("Three")[1]), now())


def test_seeding_a_bundle_names_files_like_installing_and_runs_once(tmp_path: Path) -> None:
    roots = [make_ca(f"Root {n}")[1] for n in range(2)]
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("".join(pem(r) for r in roots))
    store = pki.RootStore(tmp_path / "store")
    assert store.seed(pki.CSMS_ROOT, bundle) == 2
    assert sorted(p.stem for p in (tmp_path / "store" / pki.CSMS_ROOT).glob("*.pem")) == sorted(pki.fingerprint(r) for r in roots)
    for root in store.roots(pki.CSMS_ROOT):
        store.remove(root)
    assert store.seed(pki.CSMS_ROOT, bundle) == 0  # deleted by the CSMS: not brought back by a restart


def test_seeding_and_reading_the_trust_store_do_not_load_cryptography(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(pem(make_ca("Root")[1]))
    code = (f"import sys; from pathlib import Path; from station.trust import pki; s = pki.RootStore(Path({str(tmp_path / 'store')!r})); "
            f"s.seed(pki.CSMS_ROOT, Path({str(bundle)!r})); assert s.pem(pki.CSMS_ROOT); "
            "print('cryptography' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_private_files_are_0600_and_a_planted_link_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    target = tmp_path / "keys" / "key.pem"
    target.parent.mkdir()
    target.symlink_to(victim)
    pki.write_private(target, pki.new_key_pem())
    assert victim.read_text() == "untouched"
    assert not target.is_symlink() and stat.S_IMODE(os.stat(target).st_mode) == 0o600


def test_a_csr_carries_the_station_id_and_the_organization() -> None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    key = pki.new_key_pem()
    csr = x509.load_pem_x509_csr(pki.csr_pem(key, "ORGE_AC_001", "Orge CPO").encode())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ORGE_AC_001"
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Orge CPO"
