"""Admin API bodies: camelCase wire names, strict fields, errors that never quote values."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from opendps.admin_api.schemas import (
    AuditRecord,
    HubCreate,
    HubUpdate,
    PolicyCreate,
    parse_body,
    to_json,
)
from opendps.model.errors import INVALID_BODY, DpsError


def test_bodies_use_camel_case_names_and_defaults() -> None:
    hub = parse_body(HubCreate, b'{"hostName": "hub.example", "allocationWeight": 4}')
    assert (hub.host_name, hub.allocation_weight, hub.apply_allocation_policy, hub.kind) == (
        "hub.example", 4, True, "builtin",
    )  # fmt: skip


def test_unknown_fields_are_refused_rather_than_ignored() -> None:
    with pytest.raises(DpsError) as raised:
        parse_body(HubCreate, b'{"hostName": "hub.example", "alocationWeight": 4}')
    assert raised.value.error_code == INVALID_BODY
    assert "alocationWeight" in raised.value.message


def test_validation_message_names_the_field_but_not_the_value() -> None:
    secret = "c2VjcmV0LXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw=="
    with pytest.raises(DpsError) as raised:
        parse_body(
            PolicyCreate,
            json.dumps({"name": "p", "rights": [], "primaryKey": secret * 10}).encode(),
        )
    assert "rights" in raised.value.message and "primaryKey" in raised.value.message
    assert secret not in raised.value.message


@pytest.mark.parametrize("raw", [b"{", b"\xff\xfe", b"[1, 2"])
def test_body_that_is_not_json_is_refused_with_400004(raw: bytes) -> None:
    with pytest.raises(DpsError) as raised:
        parse_body(HubCreate, raw)
    assert raised.value.error_code == INVALID_BODY


def test_empty_body_is_an_empty_object() -> None:
    assert parse_body(HubUpdate, b"") == HubUpdate()
    assert parse_body(HubUpdate, b"").model_fields_set == set()


def test_explicit_null_is_told_apart_from_absence() -> None:
    assert "location" in parse_body(HubUpdate, b'{"location": null}').model_fields_set


def test_timestamps_serialise_in_azure_form() -> None:
    record = AuditRecord(
        id=7,
        at=datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC),
        instance=None,
        actor="admin",
        action="hub.add",
        target="hubs/h",
    )
    assert json.loads(to_json(record))["at"] == "2026-01-02T03:04:05.6000000Z"
