"""The OpenAPI document is generated from the route table and the schemas, and is complete."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from opendps.admin_api.openapi import build_openapi_document
from opendps.admin_api.routes import ADMIN_BASE_PATH, ADMIN_ROUTES, add_admin_routes
from opendps.engine.ports import RandomIdGenerator, SystemClock
from opendps.service_api.context import ServiceContext

DOCUMENT = build_openapi_document(ADMIN_ROUTES, base_path=ADMIN_BASE_PATH)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_every_route_is_documented_with_its_method() -> None:
    documented = {
        (method.upper(), path) for path, ops in DOCUMENT["paths"].items() for method in ops
    }
    registered = {(r.method, ADMIN_BASE_PATH + r.path) for r in ADMIN_ROUTES}
    assert documented == registered


def test_every_schema_reference_resolves() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    refs = _refs(DOCUMENT)
    assert refs
    assert {ref.removeprefix("#/components/schemas/") for ref in refs} <= set(schemas)


def test_path_parameters_and_error_body_are_described() -> None:
    operation = DOCUMENT["paths"]["/admin/v1/instances/{instance}/hubs/{hub}"]["patch"]
    assert [p["name"] for p in operation["parameters"]] == ["instance", "hub", "If-Match"]
    assert operation["responses"]["default"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ProvisioningServiceErrorDetails"
    }


def test_import_route_takes_dps_enrollments_as_json_lines_or_array() -> None:
    content = DOCUMENT["paths"]["/admin/v1/instances/{instance}/enrollments/import"]["post"][
        "requestBody"
    ]["content"]
    enrollment = {"$ref": "#/components/schemas/IndividualEnrollment"}
    assert content["application/x-ndjson"]["schema"] == enrollment
    assert content["application/json"]["schema"] == {"type": "array", "items": enrollment}


def test_routes_are_registered_with_names() -> None:
    app = web.Application()
    context = ServiceContext(
        store=None, clock=SystemClock(), ids=RandomIdGenerator(), public_hosts=()
    )  # type: ignore[arg-type]
    add_admin_routes(app, context)
    names = {route.name for route in app.router.routes()}
    assert "admin.import_enrollments" in names and "openapi" in names
    assert len([n for n in names if n and n.startswith("admin.")]) == len(ADMIN_ROUTES)
