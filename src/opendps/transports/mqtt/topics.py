"""DPS over MQTT: the user name, the request topics and the response topic (protocol.md §3).

Pure string functions; the only place the MQTT wire names of DPS are written. Parsers raise
`DpsError` (STYLE §3.2: `parse_*` returns a value or raises), formatters never fail.

Response-topic rules the SDK parsers impose (clients.md §2, §3b; protocol.md §3):
- only `$rid` carries a `$` (Python splits the topic on `$` and takes the third part);
- `$rid` is echoed byte for byte as received, empty when the request had none (Azure does so);
- `retry-after` is a whole number (Python runs `int(x, 10)` on it: "3.0" kills its pipeline);
- the status is the fourth `/` segment and the query follows `/?` (Node's regex needs both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import unquote

from opendps.model.errors import BAD_REQUEST, DpsError

__all__ = [
    "REGISTER_TOPIC_PREFIX",
    "RESPONSE_FILTER",
    "STATUS_TOPIC_PREFIX",
    "DeviceIdentity",
    "RegisterTopic",
    "RequestTopic",
    "StatusTopic",
    "extract_rid",
    "parse_request_topic",
    "parse_response_topic",
    "parse_username",
    "response_topic",
]

# The one filter a device may subscribe to (protocol.md §3).
RESPONSE_FILTER = "$dps/registrations/res/#"
REGISTER_TOPIC_PREFIX = "$dps/registrations/PUT/iotdps-register/"
STATUS_TOPIC_PREFIX = "$dps/registrations/GET/iotdps-get-operationstatus/"
_RESPONSE_PREFIX = "$dps/registrations/res/"
_REGISTRATIONS = "registrations"


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """What the CONNECT user name says: `{idScope}/registrations/{registrationId}/api-version=…`."""

    id_scope: str
    registration_id: str
    api_version: str | None


@dataclass(frozen=True, slots=True)
class ResponseTopic:
    """What a device reads from `$dps/registrations/res/{status}/?$rid=…&retry-after=…`."""

    status: int
    rid: str
    retry_after: int | None


@dataclass(frozen=True, slots=True)
class RegisterTopic:
    rid: str


@dataclass(frozen=True, slots=True)
class StatusTopic:
    rid: str
    operation_id: str


RequestTopic: TypeAlias = RegisterTopic | StatusTopic


def parse_username(username: str) -> DeviceIdentity:
    """Split the CONNECT user name (Python, Node and C all send the query part; the docs'
    minimal form has only `api-version`). Raises DpsError 400000."""
    parts = username.split("/", 3)
    if len(parts) < 3 or parts[1].lower() != _REGISTRATIONS or not parts[0] or not parts[2]:
        raise DpsError(BAD_REQUEST, "MQTT user name is not {idScope}/registrations/{id}/...")
    query = _query(parts[3]) if len(parts) == 4 else {}
    api_version = query.get("api-version")
    return DeviceIdentity(parts[0], parts[2], unquote(api_version) if api_version else None)


def parse_request_topic(topic: str) -> RequestTopic:
    """A device publish topic → what it asks for. Raises DpsError 400000 for anything else."""
    path, separator, query_text = topic.partition("?")
    query = _query(query_text) if separator else {}
    # A request without `$rid` is still served, answered with an empty `$rid=`: Azure does so
    # (an AT-command device sending `?rid=1` got `res/202/?$rid=&retry-after=3`, protocol.md §3).
    rid = query.get("$rid", "")
    if path == REGISTER_TOPIC_PREFIX:
        return RegisterTopic(rid)
    if path == STATUS_TOPIC_PREFIX:
        operation_id = query.get("operationId")
        if not operation_id:
            raise DpsError(BAD_REQUEST, "Operation status topic has no operationId.")
        return StatusTopic(rid, unquote(operation_id))
    raise DpsError(BAD_REQUEST, "Unknown request topic.")


def extract_rid(topic: str) -> str:
    """The raw `$rid` value of any topic, or "" when it has none: what an error answer echoes."""
    _, separator, query_text = topic.partition("?")
    return _query(query_text).get("$rid", "") if separator else ""


def response_topic(status: int, rid: str, retry_after: int | None = None) -> str:
    """`$dps/registrations/res/{status}/?$rid={rid}[&retry-after={seconds}]`."""
    topic = f"{_RESPONSE_PREFIX}{status}/?$rid={rid}"
    if retry_after is not None:
        topic += f"&retry-after={int(retry_after)}"
    return topic


def parse_response_topic(topic: str) -> ResponseTopic:
    """The device side of `response_topic` (used by the simulator). Raises DpsError 400000."""
    path, separator, query_text = topic.partition("?")
    status_text = path.removeprefix(_RESPONSE_PREFIX).rstrip("/")
    if not path.startswith(_RESPONSE_PREFIX) or not separator or not status_text.isdigit():
        raise DpsError(BAD_REQUEST, "Not a DPS response topic.")
    query = _query(query_text)
    retry_after = query.get("retry-after")
    return ResponseTopic(
        int(status_text),
        query.get("$rid", ""),
        int(retry_after) if retry_after and retry_after.isdigit() else None,
    )


def _query(text: str) -> dict[str, str]:
    """`a=1&b=2` with raw (undecoded) values; the first occurrence of a key wins."""
    values: dict[str, str] = {}
    for item in text.split("&"):
        key, _, value = item.partition("=")
        if key:
            values.setdefault(key, value)
    return values
