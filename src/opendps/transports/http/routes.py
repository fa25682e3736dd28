"""The device registration REST API (protocol.md §1.1) on an aiohttp application.

Thin by design: parse the path, the `Authorization` header and the JSON body into engine
requests, call the engine, render. Device paths begin with the ID scope, whose grammar
(`0ne` + 8 hex digits) no service path segment (`enrollments`, `enrollmentGroups`,
`registrations`, …) can match, so these routes and the service API share one application
without colliding. Literal segments match in any case (§1.1).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from opendps.engine.api import (
    DeviceEngine,
    DeviceStatusRequest,
    OperationStatusRequest,
    RegisterRequest,
    SasCredential,
    TpmChallengeRequest,
    X509Credential,
)
from opendps.model.errors import BODY_TOO_LARGE, INTERNAL_ERROR, DpsError
from opendps.observability.logging import log_event, request_id
from opendps.tls.server import EXTRA_PEER_CHAIN
from opendps.transports.bodies import parse_device_registration, tpm_challenge_body
from opendps.transports.http.render import (
    json_response,
    render_error,
    render_operation,
    render_registration,
)

logger = logging.getLogger(__name__)

# Azure's message size limit is 96 KB (protocol.md §9). A DeviceRegistration is a registration
# ID, an optional TPM public key pair and the device's payload; anything larger is refused
# with 413 before it is read.
MAX_DEVICE_BODY_BYTES = 96 * 1024

_SCOPE = r"{id_scope:(?i:0ne[0-9a-f]{8})}"
_REGISTRATIONS = r"{_registrations:(?i:registrations)}"
_BASE = f"/{_SCOPE}/{_REGISTRATIONS}/{{registration_id}}"
REGISTER_PATH = _BASE + r"/{_register:(?i:register)}"
OPERATION_PATH = _BASE + r"/{_operations:(?i:operations)}/{operation_id}"
REGISTRATION_PATH = _BASE


def add_device_routes(
    app: web.Application, engine: DeviceEngine, *, max_body_bytes: int = MAX_DEVICE_BODY_BYTES
) -> None:
    """Register the three device routes on `app`:

    - `PUT /{idScope}/registrations/{registrationId}/register` → 200 terminal / 202 assigning
    - `GET /{idScope}/registrations/{registrationId}/operations/{operationId}` (a body, such as
      Node's `{}`, is read and ignored) → 200 terminal / 202 assigning
    - `POST /{idScope}/registrations/{registrationId}` → 200 `DeviceRegistrationResult`
    """
    handlers = _DeviceHandlers(engine, max_body_bytes)
    app.router.add_put(REGISTER_PATH, handlers.register)
    app.router.add_get(OPERATION_PATH, handlers.operation_status, allow_head=False)
    app.router.add_post(REGISTRATION_PATH, handlers.registration_status)


class _DeviceHandlers:
    def __init__(self, engine: DeviceEngine, max_body_bytes: int) -> None:
        self._engine = engine
        self._max_body = max_body_bytes

    async def register(self, request: web.Request) -> web.StreamResponse:
        async def call() -> web.StreamResponse:
            body = parse_device_registration(await _read_body(request, self._max_body))
            credential = _credential(request)
            if credential is None and body.tpm is not None:
                # A TPM device's first request: answer 401 with the key its TPM must import
                # (protocol.md §1.5, §6.2); it repeats the request with a SAS signed by it.
                blob = await self._engine.tpm_challenge(
                    TpmChallengeRequest(
                        id_scope=request.match_info["id_scope"],
                        registration_id=request.match_info["registration_id"],
                        endorsement_key=body.tpm.endorsement_key,
                        storage_root_key=body.tpm.storage_root_key,
                        body_registration_id=body.registration_id,
                    )
                )
                return json_response(
                    tpm_challenge_body(blob), status=401, request_id=_current_request_id()
                )
            result = await self._engine.register(
                RegisterRequest(
                    id_scope=request.match_info["id_scope"],
                    registration_id=request.match_info["registration_id"],
                    credential=credential,
                    payload=body.payload,
                    body_registration_id=body.registration_id,
                )
            )
            return render_operation(result, request_id=_current_request_id())

        return await _handle(request, call)

    async def operation_status(self, request: web.Request) -> web.StreamResponse:
        async def call() -> web.StreamResponse:
            await _read_body(request, self._max_body)  # Node sends `{}`; nothing in it matters
            result = await self._engine.operation_status(
                OperationStatusRequest(
                    id_scope=request.match_info["id_scope"],
                    registration_id=request.match_info["registration_id"],
                    operation_id=request.match_info["operation_id"],
                    credential=_credential(request),
                )
            )
            return render_operation(result, request_id=_current_request_id())

        return await _handle(request, call)

    async def registration_status(self, request: web.Request) -> web.StreamResponse:
        async def call() -> web.StreamResponse:
            body = parse_device_registration(await _read_body(request, self._max_body))
            result = await self._engine.registration_status(
                DeviceStatusRequest(
                    id_scope=request.match_info["id_scope"],
                    registration_id=request.match_info["registration_id"],
                    credential=_credential(request),
                    body_registration_id=body.registration_id,
                )
            )
            return render_registration(result, request_id=_current_request_id())

        return await _handle(request, call)


async def _handle(
    request: web.Request, call: Callable[[], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Run a handler under a request id; translate and log every error here, once."""
    rid = request_id.get() or str(uuid.uuid4())
    token = request_id.set(rid)
    try:
        return await call()
    except DpsError as error:
        log_event(
            logger,
            logging.INFO,
            "device.http.error",
            method=request.method,
            path=request.path,
            status=error.http_status,
            error_code=error.error_code,
            error=error.message,
        )
        return render_error(error, request_id=rid)
    except Exception as error:  # a bug: answer like Azure, keep the trace in the log
        log_event(
            logger,
            logging.ERROR,
            "device.http.internal_error",
            method=request.method,
            path=request.path,
            exc_info=error,
        )
        return render_error(DpsError(INTERNAL_ERROR, "Internal error."), request_id=rid)
    finally:
        request_id.reset(token)


def _current_request_id() -> str:
    return request_id.get() or str(uuid.uuid4())


def _credential(request: web.Request) -> SasCredential | X509Credential | None:
    """The `Authorization` header (symmetric key, TPM), else the TLS client chain (X.509
    devices send no SAS, protocol.md §1.2); None when there is neither."""
    header = request.headers.get("Authorization")
    if header:
        return SasCredential(header)
    transport = request.transport
    chain = transport.get_extra_info(EXTRA_PEER_CHAIN) if transport is not None else None
    return X509Credential(tuple(chain)) if chain else None


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The body, at most `limit` bytes (413 otherwise), whether or not a length was announced."""
    if request.content_length is not None and request.content_length > limit:
        raise DpsError(BODY_TOO_LARGE, f"Request body is larger than {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(16 * 1024):
        size += len(chunk)
        if size > limit:
            raise DpsError(BODY_TOO_LARGE, f"Request body is larger than {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)
