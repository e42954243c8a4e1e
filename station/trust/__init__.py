"""Keys, certificates, credentials and firmware signatures: everything the station trusts, in one place.

- `pki`: certificate stores (CSMS and manufacturer roots), chain and signature checks (cryptography).
- `pki_worker`: runs `pki` in a child process so `cryptography` stays out of the daemon's memory.
- `credentials`: the station's own password, client key and certificate, and their renewal.
- `generations`: the client key and certificate on disk, one directory per pair, switched as a pair.
- `firmware`: the daemon's side of a firmware update (download, signature pre-check, request for root).
- `signature`: the firmware signature and signing-certificate rules, stdlib + cryptography only, so that
  root's `station-update` can import it without any daemon code.
"""
