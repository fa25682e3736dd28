"""The shared HTTP middleware: DPS error bodies, tracking ids and one log line per request."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from tests.integration.service_api.conftest import NOW, FakeClock

from opendps.model.errors import (
    BAD_REQUEST,
    BODY_TOO_LARGE,
    INTERNAL_ERROR,
    INVALID_BODY,
    THROTTLED,
    DpsError,
)
from opendps.observability.logging import request_id
from opendps.service_api.http import create_http_middleware, set_request_instance

Client = TestClient[web.Request, web.Application]
SECRET_HEADER = "SharedAccessSignature sr=x&sig=c2VjcmV0&se=1"


async def _dps_error(request: web.Request) -> web.Response:
    set_request_instance(request, "tenant-1")
    raise DpsError(THROTTLED, "Slow down.", retry_after=7)


async def _crash(request: web.Request) -> web.Response:
    raise RuntimeError("database exploded")


async def _json(request: web.Request) -> web.Response:
    return web.json_response(await request.json())


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/elsewhere")


async def _bad_request(request: web.Request) -> web.Response:
    raise web.HTTPBadRequest()


async def _too_many(request: web.Request) -> web.Response:
    raise web.HTTPTooManyRequests(headers={"Retry-After": "3"})


async def _echo_request_id(request: web.Request) -> web.Response:
    return web.Response(text=str(request_id.get()))


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    app = web.Application(
        middlewares=[create_http_middleware(FakeClock(NOW))], client_max_size=1024
    )
    app.router.add_get("/dps-error", _dps_error)
    app.router.add_get("/crash", _crash)
    app.router.add_post("/json", _json)
    app.router.add_get("/redirect", _redirect)
    app.router.add_get("/bad-request", _bad_request)
    app.router.add_get("/too-many", _too_many)
    app.router.add_get("/request-id", _echo_request_id)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as test_client:
        yield test_client


async def test_a_dps_error_is_rendered_as_provisioning_service_error_details(
    client: Client,
) -> None:
    response = await client.get("/dps-error")
    assert response.status == 429
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.headers["x-ms-error-code"] == str(THROTTLED)
    assert response.headers["Retry-After"] == "7"
    body = await response.json()
    assert body == {
        "errorCode": THROTTLED,
        "trackingId": response.headers["x-ms-request-id"],
        "message": "Slow down.",
        "timestampUtc": "2026-05-01T12:00:00.0000000Z",
        "info": {},
    }


async def test_an_unexpected_exception_is_500000_and_logged_once_with_its_trace(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="opendps.http")
    response = await client.get("/crash")
    assert response.status == 500
    body = await response.json()
    assert body["errorCode"] == INTERNAL_ERROR and "exploded" not in body["message"]
    failures = [r for r in caplog.records if r.getMessage() == "http.unhandled_exception"]
    assert len(failures) == 1 and failures[0].exc_info is not None
    assert "database exploded" in caplog.text


async def test_malformed_json_read_by_a_handler_is_400(client: Client) -> None:
    response = await client.post(
        "/json", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert (await response.json())["errorCode"] == INVALID_BODY and response.status == 400


async def test_a_body_over_client_max_size_is_413000(client: Client) -> None:
    response = await client.post("/json", data=b"[" + b"1," * 1000 + b"1]")
    assert response.status == 413
    assert (await response.json())["errorCode"] == BODY_TOO_LARGE


async def test_aiohttp_http_errors_take_the_dps_form(client: Client) -> None:
    bad = await client.get("/bad-request")
    assert bad.status == 400 and (await bad.json())["errorCode"] == BAD_REQUEST
    throttled = await client.get("/too-many")
    assert throttled.status == 429 and (await throttled.json())["errorCode"] == 429000
    assert throttled.headers["Retry-After"] == "3"


async def test_redirects_pass_through_untouched_and_are_logged(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="opendps.http")
    response = await client.get("/redirect", allow_redirects=False)
    assert response.status == 302 and response.headers["Location"] == "/elsewhere"
    lines = [r for r in caplog.records if r.getMessage() == "http.request"]
    assert [r.opendps_fields["status"] for r in lines] == [302]  # type: ignore[attr-defined]


async def test_the_request_id_is_the_tracking_id_and_set_while_handling(client: Client) -> None:
    response = await client.get("/request-id")
    assert response.status == 200
    assert await response.text() == response.headers["x-ms-request-id"]
    assert request_id.get() is None


async def test_each_request_is_logged_once_without_the_authorization_header(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="opendps.http")
    await client.get("/dps-error", headers={"Authorization": SECRET_HEADER})
    lines = [r for r in caplog.records if r.getMessage() == "http.request"]
    assert len(lines) == 1
    fields = lines[0].opendps_fields  # type: ignore[attr-defined]
    assert (
        fields["method"] == "GET" and fields["status"] == 429 and fields["instance"] == "tenant-1"
    )
    assert fields["error_code"] == THROTTLED and fields["duration_ms"] >= 0
    assert fields["route"] == "/dps-error"
    assert "c2VjcmV0" not in caplog.text and "c2VjcmV0" not in repr(fields)
