"""`If-Match` preconditions (protocol.md §7.2).

Absent: unconditional. `*`: the object must exist. Anything else: it must equal the stored etag,
else 412. Etags are opaque quoted strings (`"<uuid>"`) that Node and Python send back as they
received them; a caller who copied one without its quotes (curl users, shell scripts) still
means the same etag, so the comparison ignores surrounding quotes and a weak `W/` prefix.
The store does the atomic compare; this module only normalises the header for it.
"""

from __future__ import annotations

IF_MATCH_HEADER = "If-Match"


def if_match_for_store(if_match: str | None, stored_etag: str | None) -> str | None:
    """The `if_match` to pass to the store: the stored etag itself when the header names it."""
    if if_match is None:
        return None
    value = if_match.strip()
    if not value:  # an empty header states no precondition
        return None
    if value == "*" or stored_etag is None:
        return value
    if _bare(value) == _bare(stored_etag):
        return stored_etag
    return value


def _bare(etag: str) -> str:
    text = etag.strip()
    if text[:2].upper() == "W/":
        text = text[2:]
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return text
