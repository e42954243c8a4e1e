"""The artefact URL conventions: checksum fragment or sidecar, version from the file name, redaction."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from station.trust.firmware import parse_sidecar, redact_url, release_version, sidecar_url, split_location

DIGEST = "ab" * 32


def test_sha256_fragment_is_taken_and_never_part_of_the_fetched_url() -> None:
    url, digest = split_location(f"https://h.example/r/ocpp_station-1.5.0-py3-none-any.whl?sig=x#sha256={DIGEST.upper()}")
    assert url == "https://h.example/r/ocpp_station-1.5.0-py3-none-any.whl?sig=x"
    assert digest == DIGEST


def test_without_fragment_the_sidecar_sits_beside_the_artefact() -> None:
    url, digest = split_location("https://h.example/r/ocpp_station-1.5.0.tar.gz")
    assert digest is None
    assert sidecar_url(url) == "https://h.example/r/ocpp_station-1.5.0.tar.gz.sha256"


@pytest.mark.parametrize("text", [f"{DIGEST}  ocpp_station-1.5.0-py3-none-any.whl\n", f"{DIGEST}\n", f"  {DIGEST.upper()} *file\n"])
def test_sidecar_accepts_sha256sum_output_or_the_bare_digest(text: str) -> None:
    assert parse_sidecar(text) == DIGEST


@pytest.mark.parametrize("text", ["", "not a digest", "ab" * 31, "<html>404</html>"])
def test_sidecar_without_a_digest_gives_none(text: str) -> None:
    assert parse_sidecar(text) is None


@pytest.mark.parametrize(("name", "version"), [
    ("ocpp_station-1.5.0-py3-none-any.whl", "1.5.0"),
    ("ocpp_station-1.5.0rc1-py3-none-any.whl", "1.5.0rc1"),
])
def test_version_comes_from_the_wheel_name(name: str, version: str) -> None:
    assert release_version(name) == version


@pytest.mark.parametrize("name", ["ocpp_station-1.5.0rc1.tar.gz", "ocpp-station-2.0.0.tar.gz"])
def test_an_sdist_is_not_a_release_the_station_installs(name: str) -> None:
    """Its build code would run as root in station-update."""
    with pytest.raises(ValueError, match="not a wheel"):
        release_version(name)


@pytest.mark.parametrize("name", ["requests-2.0.0-py3-none-any.whl", "firmware.bin", "ocpp_station.whl", ""])
def test_other_files_are_not_releases_of_the_station(name: str) -> None:
    with pytest.raises(ValueError):
        release_version(name)


@given(user=st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.~", min_size=1, max_size=12),
       password=st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~!$&'()*+,;=", min_size=6, max_size=20),
       query=st.text("abcdefghijklmnopqrstuvwxyz0123456789=&", min_size=0, max_size=20))
def test_redacted_url_never_shows_user_info_or_query(user: str, password: str, query: str) -> None:
    url = f"https://{user}:{password}@releases.example.com:8443/r/ocpp_station-1.5.0.tar.gz" + (f"?{query}" if query else "")
    shown = redact_url(url)
    assert shown.startswith("https://releases.example.com:8443/r/ocpp_station-1.5.0.tar.gz")
    assert password not in shown.replace("https://releases.example.com:8443/r/ocpp_station-1.5.0.tar.gz", "")
    assert "@" not in shown
