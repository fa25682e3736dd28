"""Identifier grammars: ID scopes, registration IDs, enrollment group IDs, device IDs.

Registration IDs are case-insensitive but case-preserving (protocol.md §1.4): records keep the
spelling the device or operator used and are keyed by `registration_key()`.
"""

from __future__ import annotations

import re
import secrets

from opendps.model.errors import INVALID_ID, INVALID_REGISTRATION_ID, DpsError

# Azure: registration IDs are at most 128 characters (protocol.md §9).
REGISTRATION_ID_MAX_LENGTH = 128
# Azure device IDs: up to 128 characters of ASCII letters, digits and `- . % _ * ? ! ( ) , : = @ $ '`.
DEVICE_ID_MAX_LENGTH = 128
# Names of instances, policies, hubs and CA certificates: short, URL- and log-safe.
NAME_MAX_LENGTH = 64

_REGISTRATION_ID = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._:-]*[A-Za-z0-9-])?$")
_DEVICE_ID = re.compile(r"^[A-Za-z0-9\-.%_*?!(),:=@$']{1,128}$")
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,62}[A-Za-z0-9])?$")
_ID_SCOPE = re.compile(r"^0ne[0-9A-F]{8}$")


def parse_registration_id(value: str) -> str:
    """Return `value` if it is a valid registration ID, else raise DpsError(400001).

    Grammar (spec + protocol.md §9): 1–128 characters of letters, digits and `- . _ :`, no
    special character first, and the last one alphanumeric or `-` (the stricter X.509 rule,
    which every other form also satisfies in practice).
    """
    if not isinstance(value, str) or not 0 < len(value) <= REGISTRATION_ID_MAX_LENGTH:
        raise DpsError(INVALID_REGISTRATION_ID, "Registration ID must be 1 to 128 characters.")
    if not _REGISTRATION_ID.match(value):
        raise DpsError(
            INVALID_REGISTRATION_ID,
            "Registration ID may contain only letters, digits and '-', '.', '_', ':', "
            "and must start with a letter or digit and end with a letter, digit or '-'.",
        )
    return value


def parse_enrollment_group_id(value: str) -> str:
    """Enrollment group IDs follow the registration ID grammar."""
    try:
        return parse_registration_id(value)
    except DpsError as err:
        raise DpsError(
            INVALID_ID, err.message.replace("Registration ID", "Enrollment group ID")
        ) from None


def parse_device_id(value: str) -> str:
    if not isinstance(value, str) or not _DEVICE_ID.match(value):
        raise DpsError(
            INVALID_ID,
            "Device ID must be 1 to 128 characters of letters, digits and -.%_*?!(),:=@$'.",
        )
    return value


def parse_name(value: str, what: str = "Name") -> str:
    """Names of instances, access policies, linked hubs and CA certificates."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise DpsError(
            INVALID_ID,
            f"{what} must be 1 to {NAME_MAX_LENGTH} letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit.",
        )
    return value


def registration_key(registration_id: str) -> str:
    """The case-folded key under which a registration ID (or group ID) is stored and looked up."""
    return registration_id.lower()


def is_id_scope(value: str) -> bool:
    return bool(_ID_SCOPE.match(value))


def generate_id_scope() -> str:
    """A fresh ID scope in Azure's form: `0ne` followed by 8 upper-case hex digits."""
    return "0ne" + secrets.token_hex(4).upper()
