"""Shared access signature tokens: parse, sign, verify (protocol.md §2, clients.md §1 and §4).

The trap this module exists for: clients disagree on how `sr` is written (Python URL-encodes it,
Node does not) and each signs exactly what it wrote. So the signature is checked over `sr` as it
appeared on the wire first, then over its canonical encodings; authorisation compares the
decoded resource.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import re
from dataclasses import dataclass
from urllib.parse import quote, quote_plus, unquote, unquote_plus

from opendps.model.errors import UNAUTHORIZED, DpsError

SAS_PREFIX = "SharedAccessSignature "
# Tokens are short; a header far longer than any client sends is refused before parsing.
MAX_TOKEN_LENGTH = 4096
# Clocks on devices drift; Azure tolerates a few minutes. Expiry is checked against now - skew.
DEFAULT_CLOCK_SKEW_SECONDS = 300

_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


@dataclass(frozen=True, slots=True)
class SasToken:
    """A parsed token. `sr_raw` is `sr` exactly as sent (what the client signed)."""

    sr_raw: str
    resource: str  # sr URL-decoded
    signature: bytes
    expiry: int
    key_name: str | None


def _unauthorized(reason: str) -> DpsError:
    return DpsError(UNAUTHORIZED, f"Unauthorized: {reason}")


def parse_sas_token(value: str) -> SasToken:
    """Parse `SharedAccessSignature sr=…&sig=…&se=…[&skn=…]` in any field order.

    Raises DpsError(401002) for anything malformed; never returns None.
    """
    if not isinstance(value, str) or len(value) > MAX_TOKEN_LENGTH:
        raise _unauthorized("malformed SAS token")
    text = value.strip()
    if text[: len(SAS_PREFIX)].lower() != SAS_PREFIX.lower():
        raise _unauthorized("not a SharedAccessSignature token")
    fields: dict[str, str] = {}
    for part in text[len(SAS_PREFIX) :].strip().split("&"):
        name, sep, field_value = part.partition("=")
        if not sep or not name or name in fields:
            raise _unauthorized("malformed SAS token")
        fields[name] = field_value
    try:
        sr_raw, sig_text, se_text = fields["sr"], fields["sig"], fields["se"]
    except KeyError:
        raise _unauthorized("SAS token needs sr, sig and se") from None
    if set(fields) - {"sr", "sig", "se", "skn"}:
        raise _unauthorized("unknown field in SAS token")
    try:
        signature = base64.b64decode(unquote(sig_text), validate=True)
        expiry = int(unquote(se_text))
    except (binascii.Error, ValueError):
        raise _unauthorized("malformed SAS token") from None
    skn = fields.get("skn")
    return SasToken(
        sr_raw=sr_raw,
        resource=unquote_plus(sr_raw) if "%" in sr_raw or "+" in sr_raw else sr_raw,
        signature=signature,
        expiry=expiry,
        key_name=unquote(skn) if skn is not None else None,
    )


def compute_signature(key_b64: str, sr: str, expiry: int) -> bytes:
    """HMAC-SHA256(base64decode(key), sr + "\\n" + se)."""
    key = base64.b64decode(key_b64)
    return hmac.digest(key, f"{sr}\n{expiry}".encode(), "sha256")


# Memoized: one registration checks its token against several keys (a group's primary and
# secondary, found by scan and then confirmed), each over the same forms of the same `sr`.
@functools.lru_cache(maxsize=256)
def _signed_forms(sr_raw: str) -> tuple[str, ...]:
    # The raw form first (what every known client signs), then the canonical encodings other
    # SDKs produce: upper-case hex (Python, C#), lower-case hex (C), and quote_plus.
    decoded = unquote(sr_raw)
    upper = quote(decoded, safe="")
    forms = [sr_raw, upper, _lower_hex(upper), quote_plus(decoded), decoded]
    return tuple(dict.fromkeys(forms))


def _lower_hex(encoded: str) -> str:
    return _PERCENT_ESCAPE.sub(lambda match: match.group().lower(), encoded)


def verify_signature(token: SasToken, key_b64: str) -> bool:
    """True if `key_b64` signed this token over any accepted form of `sr` (constant time)."""
    try:
        key = base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    matched = False
    for form in _signed_forms(token.sr_raw):
        # hmac.digest: OpenSSL's one-shot HMAC, no Python HMAC object (this runs ten times for
        # every token checked against a key pair: five `sr` forms, two keys).
        expected = hmac.digest(key, f"{form}\n{token.expiry}".encode(), "sha256")
        # Every form is checked (no early exit), so timing does not reveal which one matched.
        matched |= hmac.compare_digest(expected, token.signature)
    return matched


def verify_with_keys(token: SasToken, keys: list[str]) -> bool:
    """Try the primary key, then the secondary (protocol.md §2.2 rule 4)."""
    return any([verify_signature(token, key) for key in keys])


def check_expiry(
    token: SasToken, now_epoch: float, *, skew_seconds: int = DEFAULT_CLOCK_SKEW_SECONDS
) -> None:
    """Raise DpsError(401002) if the token expired more than `skew_seconds` ago."""
    if token.expiry + skew_seconds <= now_epoch:
        raise _unauthorized("SAS token expired")


def build_sas_token(
    resource: str, key_b64: str, expiry: int, *, key_name: str | None = None, encode_sr: bool = True
) -> str:
    """A token in the form the Python SDK (encode_sr=True) or Node SDK (False) writes."""
    sr = quote(resource, safe="") if encode_sr else resource
    sig = base64.b64encode(compute_signature(key_b64, sr, expiry)).decode()
    token = f"{SAS_PREFIX}sr={sr}&sig={quote(sig, safe='')}&se={expiry}"
    if key_name is not None:
        token += f"&skn={quote(key_name, safe='')}"
    return token


def resource_matches(resource: str, expected: str) -> bool:
    """Segment-prefix match, case-insensitive: `a/b` covers `a/b/c` but not `a/bc`."""
    got = resource.strip("/").lower()
    want = expected.strip("/").lower()
    return want == got or want.startswith(got + "/")
