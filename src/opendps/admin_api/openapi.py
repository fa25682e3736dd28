"""The OpenAPI 3.1 document of the admin API, generated from the route table and schemas.py.

Nothing here is written by hand per route: paths come from `routes.ADMIN_ROUTES`, bodies from
the pydantic models they name, so the document cannot drift from what the server accepts. The
service API's models (enrollments, the DPS error body) are included as components, because the
import route carries DPS enrollments and every error has the DPS error shape.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaValue, models_json_schema

from opendps import __version__
from opendps.service_api import schemas as service_schemas

if TYPE_CHECKING:
    from opendps.admin_api.routes import AdminRoute

OPENAPI_VERSION = "3.1.0"
_PATH_PARAMETER = re.compile(r"\{([^}/]+)\}")
_SERVICE_MODELS: tuple[type[BaseModel], ...] = (
    service_schemas.IndividualEnrollment,
    service_schemas.EnrollmentGroup,
    service_schemas.DeviceRegistrationState,
    service_schemas.BulkEnrollmentOperation,
    service_schemas.BulkEnrollmentOperationResult,
    service_schemas.BulkEnrollmentGroupOperation,
    service_schemas.BulkEnrollmentGroupOperationResult,
    service_schemas.QuerySpecification,
    service_schemas.ProvisioningServiceErrorDetails,
)
_ERROR_MODEL = service_schemas.ProvisioningServiceErrorDetails
_SECURITY: list[dict[str, list[str]]] = [{"adminKey": []}, {"sharedAccessSignature": []}]

Mode = Literal["validation", "serialization"]
# Where each (model, mode) is in components/schemas: `{"$ref": "#/components/schemas/Name"}`.
Refs = dict[tuple[Any, Mode], JsonSchemaValue]


def build_openapi_document(routes: Sequence[AdminRoute], *, base_path: str) -> dict[str, Any]:
    """The whole document as JSON-ready data."""
    schemas, refs = _component_schemas(routes)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation = _operation(route, refs)
        paths.setdefault(base_path + route.path, {})[route.method.lower()] = operation
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "OpenDPS admin API",
            "version": __version__,
            "description": (
                "Instances, linked hubs, access policies, CA certificates with proof of "
                "possession, metering, audit and bulk enrollment import. Errors have the DPS "
                "error shape (ProvisioningServiceErrorDetails). See docs/admin-api.md."
            ),
        },
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": _security_schemes()},
        "security": _SECURITY,
    }


def _component_schemas(routes: Sequence[AdminRoute]) -> tuple[dict[str, Any], Refs]:
    wanted: list[tuple[type[BaseModel], Mode]] = []
    for route in routes:
        if route.request_body is not None:
            wanted.append((route.request_body, "validation"))
        if route.response is not None:
            wanted.append((route.response, "serialization"))
    wanted += [(model, "validation") for model in _SERVICE_MODELS]
    unique = list(dict.fromkeys(wanted))
    refs, definitions = models_json_schema(unique, ref_template="#/components/schemas/{model}")
    found: Refs = dict(refs)
    return definitions.get("$defs", {}), found


def _operation(route: AdminRoute, refs: Refs) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.handler.__name__,
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": _parameters(route),
        "responses": _responses(route, refs),
    }
    if route.request_body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(route.request_body, "validation")]}},
        }
    if route.streamed_enrollments:
        enrollment = refs[(service_schemas.IndividualEnrollment, "validation")]
        operation["requestBody"] = {
            "required": True,
            "description": "Individual enrollments (DPS 2021-10-01 shape), any number, streamed.",
            "content": {
                "application/x-ndjson": {"schema": enrollment},
                "application/json": {"schema": {"type": "array", "items": enrollment}},
            },
        }
    return operation


def _parameters(route: AdminRoute) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAMETER.findall(route.path)
    ]
    parameters += [
        {
            "name": query.name,
            "in": "query",
            "required": False,
            "description": query.description,
            "schema": query.schema,
        }
        for query in route.query
    ]
    if route.uses_if_match:
        parameters.append(
            {
                "name": "If-Match",
                "in": "header",
                "required": False,
                "description": "Apply only if the stored etag equals this one (or `*`); else 412.",
                "schema": {"type": "string"},
            }
        )
    return parameters


def _responses(route: AdminRoute, refs: Refs) -> dict[str, Any]:
    success: dict[str, Any] = {"description": route.summary}
    if route.response is not None:
        schema = refs[(route.response, "serialization")]
        success["content"] = {"application/json": {"schema": schema}}
    error = {
        "description": "A DPS error; the HTTP status is errorCode // 1000 (docs/errors.md).",
        "content": {"application/json": {"schema": refs[(_ERROR_MODEL, "validation")]}},
    }
    return {str(route.status): success, "default": error}


def _security_schemes() -> dict[str, Any]:
    return {
        "adminKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "The deployment admin key (`<data dir>/admin.key`): every instance.",
        },
        "sharedAccessSignature": {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": (
                "`SharedAccessSignature sr=…&sig=…&se=…&skn=<policy>` signed by an instance "
                "access policy with the ServiceConfig right: that instance only."
            ),
        },
    }
