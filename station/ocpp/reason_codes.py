"""StatusInfo reasonCodes (2.0.1 `string[20]`) chosen to fit, never cut.

The spec's appendix lists reason codes (InvalidCertificate, UnknownEvse, TxNotFound, ...); a reason
text the station gives is mapped to one of them when a keyword says which, else to its leading
whole words in CamelCase that fit 20 characters (a code cut mid-word, "UnreadableSigningCer",
tells the CSMS nothing). The full reason always goes to additionalInfo.
"""

from __future__ import annotations

import re

MAX = 20
"""CiString20Type: StatusInfoType.reasonCode."""

_KNOWN: tuple[tuple[str, str], ...] = (
    # (regex on the lower-cased reason, code), first match wins
    (r"required|missing", "MissingParam"),
    (r"signing certificate|certificate", "InvalidCertificate"),
    (r"signature", "InvalidSignature"),
    (r"unknown (evse|connector)", "UnknownEvse"),
    (r"no transaction|transaction not found", "TxNotFound"),
    (r"url|location|host|address", "InvalidURL"),
    (r"busy|in progress|already", "Busy"),
    (r"not configured|not kept|not supported|no iso 15118|unsupported", "UnsupportedRequest"),
    (r"faulted|unavailable|inoperative", "Unavailable"),
    (r"could not be saved|store|disk|write", "InternalError"),
)


def reason_code(reason: str, fallback: str = "Rejected") -> str:
    """A reasonCode for `reason` of at most 20 characters (a listed code, or whole words that fit)."""
    low = reason.lower()
    for pattern, code in _KNOWN:
        if re.search(pattern, low):
            return code
    code = ""
    for word in re.split(r"[^0-9A-Za-z]+", reason):
        if not word:
            continue
        part = word[:1].upper() + word[1:]
        if len(code) + len(part) > MAX:
            break
        code += part
    return code or fallback[:MAX]


def fit(code: str) -> str:
    """A code (e.g. an enum value used as reasonCode) cut at a word boundary to 20 characters:
    "UnsupportedMonitorType" → "UnsupportedMonitor"."""
    if len(code) <= MAX:
        return code
    out = ""
    for word in re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", code):
        if len(out) + len(word) > MAX:
            break
        out += word
    return out or code[:MAX]
