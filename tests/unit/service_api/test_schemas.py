"""Wire shapes (2021-10-01): parsing rules, rendering, and the JSON schema they generate."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opendps.model.errors import INVALID_BODY, DpsError
from opendps.service_api import schemas


def _error(call: Any) -> DpsError:
    with pytest.raises(DpsError) as err:
        call()
    return err.value


# -- parsing ---------------------------------------------------------------------------------------


def test_unknown_fields_are_ignored_at_every_level() -> None:
    wire = schemas.parse_body(
        schemas.IndividualEnrollment,
        json.dumps(
            {
                "registrationId": "dev-1",
                "futureField": {"x": 1},
                "attestation": {"type": "symmetricKey", "symmetricKey": {}, "extra": True},
                "capabilities": {"iotEdge": True, "iotEdgeNext": 1},
            }
        ).encode(),
    )
    assert wire.registration_id == "dev-1"
    assert wire.capabilities is not None and wire.capabilities.iot_edge is True


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"registrationId": 5, "attestation": {"type": "symmetricKey"}}, "registrationId"),
        (
            {
                "registrationId": "d",
                "attestation": {"type": "symmetricKey"},
                "capabilities": {"iotEdge": "yes"},
            },
            "capabilities.iotEdge",
        ),
        (
            {"registrationId": "d", "attestation": {"type": "symmetricKey"}, "iotHubs": "hub"},
            "iotHubs",
        ),
        (
            {"registrationId": "d", "attestation": {"type": "symmetricKey"}, "iotHubs": [1]},
            "iotHubs[0]",
        ),
        (
            {"registrationId": "d", "attestation": {"type": "symmetricKey"}, "initialTwin": []},
            "initialTwin",
        ),
        (
            {
                "registrationId": "d",
                "attestation": {"type": "symmetricKey"},
                "initialTwin": {"tags": 3},
            },
            "initialTwin.tags",
        ),
        ({"registrationId": "d", "attestation": "symmetricKey"}, "attestation"),
        ({"registrationId": "d"}, "attestation"),
        ({"registrationId": "d", "attestation": {"type": "password"}}, "attestation.type"),
        (
            {
                "registrationId": "d",
                "attestation": {"type": "symmetricKey"},
                "provisioningStatus": "paused",
            },
            "provisioningStatus",
        ),
        (
            {
                "registrationId": "d",
                "attestation": {"type": "symmetricKey"},
                "allocationPolicy": "random",
            },
            "allocationPolicy",
        ),
        (
            {
                "registrationId": "d",
                "attestation": {"type": "symmetricKey"},
                "reprovisionPolicy": {"updateHubAssignment": 1},
            },
            "reprovisionPolicy.updateHubAssignment",
        ),
        (
            {"registrationId": "d", "attestation": {"type": "tpm", "tpm": {}}},
            "attestation.tpm.endorsementKey",
        ),
    ],
)
def test_wrong_types_and_unknown_enum_values_are_refused_with_their_location(
    body: dict[str, Any], where: str
) -> None:
    err = _error(
        lambda: schemas.parse_body(schemas.IndividualEnrollment, json.dumps(body).encode())
    )
    assert err.error_code == INVALID_BODY and err.http_status == 400
    assert where in err.message


@pytest.mark.parametrize("body", [b"", b"{", b"{'a': 1}", b"\xff\xfe", b"null", b"[]", b"42"])
def test_malformed_or_non_object_bodies_are_refused(body: bytes) -> None:
    err = _error(lambda: schemas.parse_body(schemas.IndividualEnrollment, body))
    assert err.error_code == INVALID_BODY


def test_validation_messages_never_quote_values() -> None:
    secret = "c2VjcmV0LWtleS12YWx1ZS10aGF0LW11c3Qtbm90LWxlYWs="
    body = {
        "registrationId": "d",
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": 12}},
    }
    body["attestation"]["symmetricKey"]["secondaryKey"] = [secret]
    err = _error(
        lambda: schemas.parse_body(schemas.IndividualEnrollment, json.dumps(body).encode())
    )
    assert secret not in err.message and "secondaryKey" in err.message


@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_a_model_or_invalid_body(body: bytes) -> None:
    try:
        schemas.parse_body(schemas.EnrollmentGroup, body)
    except DpsError as err:
        assert err.error_code == INVALID_BODY


def test_bulk_modes_are_the_four_azure_names() -> None:
    assert [m.value for m in schemas.BulkEnrollmentMode] == [
        "create",
        "update",
        "updateIfMatchETag",
        "delete",
    ]
    err = _error(
        lambda: schemas.parse_body(
            schemas.BulkEnrollmentOperation, b'{"mode": "upsert", "enrollments": []}'
        )
    )
    assert "mode" in err.message


def test_a_query_answer_is_a_json_array() -> None:
    items = [schemas.QuerySpecification(query="a"), schemas.QuerySpecification(query="b")]
    assert json.loads(schemas.dump_json(items)) == [{"query": "a"}, {"query": "b"}]
    assert schemas.dump_json([]) == b"[]"


def test_bulk_results_use_azure_names() -> None:
    result = schemas.BulkEnrollmentOperationResult(
        is_successful=False,
        errors=[
            schemas.BulkEnrollmentOperationError(
                registration_id="d", error_code=409201, error_status="exists"
            )
        ],
    )
    assert json.loads(schemas.dump_json(result)) == {
        "isSuccessful": False,
        "errors": [{"registrationId": "d", "errorCode": 409201, "errorStatus": "exists"}],
    }


def test_the_schemas_generate_a_json_schema_with_azure_names() -> None:
    document = schemas.IndividualEnrollment.model_json_schema(by_alias=True)
    assert {"registrationId", "attestation", "initialTwin", "iotHubs"} <= set(
        document["properties"]
    )
    assert {"AttestationMechanism", "X509Attestation", "DeviceRegistrationState"} <= set(
        document["$defs"]
    )
    assert set(document["required"]) == {"registrationId", "attestation"}
