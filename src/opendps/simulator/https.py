"""A thin DPS device client over HTTPS (protocol.md §1), on aiohttp: register, then poll.

`PUT …/register` answers 200 with a terminal status or 202 `assigning` with an operation ID;
the client then polls `GET …/operations/{id}`, waiting the `retry-after` the server asks for
(§1.5), until the status is terminal. An X.509 device presents its chain in the TLS handshake
and sends no `Authorization` header (§3).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any
from urllib.parse import quote

import aiohttp

from opendps.model.json import JsonObject
from opendps.simulator.api import DeviceParams, RegistrationOutcome
from opendps.simulator.channels import client_ssl_context, failure, url_host

# The newest device API version every client sends (protocol.md §1, table of clients).
DEVICE_API_VERSION = "2021-06-01"
# What Node waits when an `assigning` answer carries no `retry-after` (protocol.md §1.5).
DEFAULT_RETRY_AFTER_SECONDS = 2.0
# A server asking for longer waits is honoured up to this; beyond it the simulator would look
# hung to the person at the terminal.
MAX_RETRY_AFTER_SECONDS = 30.0
# The whole registration, polls included: longer than the server's own assigning deadline
# (120 s, engine/api.py), so the server's `failed` arrives before we give up.
REGISTRATION_DEADLINE_SECONDS = 150.0
# One request: the SDKs give each call 30 s (protocol.md §1.5).
REQUEST_TIMEOUT_SECONDS = 30.0
# Statuses that end a registration (protocol.md §1.4).
_TERMINAL = frozenset({"assigned", "failed", "disabled"})


async def register_https(params: DeviceParams) -> RegistrationOutcome:
    """Register the device and poll until the registration ends.

    Never raises for network or protocol trouble: an outcome without a status code and a
    `message` says what went wrong (no key or token is ever in it).
    """
    try:
        context = client_ssl_context(params)
    except (OSError, ssl.SSLError, ValueError) as err:
        return failure(f"cannot load the TLS files: {err}")
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with asyncio.timeout(REGISTRATION_DEADLINE_SECONDS):
                return await _register(session, context, params)
    except TimeoutError:
        return failure("the registration did not end in time")
    except aiohttp.ClientSSLError as err:
        return failure(f"TLS with {params.host} failed: {err}")
    except (aiohttp.ClientError, OSError) as err:
        return failure(f"cannot reach {params.host}:{params.port}: {err}")


async def _register(
    session: aiohttp.ClientSession, context: ssl.SSLContext, params: DeviceParams
) -> RegistrationOutcome:
    base = (
        f"https://{url_host(params.host)}:{params.port}/{quote(params.id_scope, safe='')}"
        f"/registrations/{quote(params.registration_id, safe='')}"
    )
    query = {"api-version": DEVICE_API_VERSION}
    headers = _headers(params)
    body: JsonObject = {"registrationId": params.registration_id}
    if params.payload is not None:
        body["payload"] = params.payload
    async with session.put(
        base + "/register", params=query, json=body, headers=headers, ssl=context
    ) as response:
        status, answer, wait = await _read(response)
    while status < 400 and answer.get("status") == "assigning":
        operation_id = answer.get("operationId")
        if not isinstance(operation_id, str) or not operation_id:
            return RegistrationOutcome(status, answer)
        await asyncio.sleep(wait)
        async with session.get(
            f"{base}/operations/{quote(operation_id, safe='')}",
            params=query,
            headers=headers,
            ssl=context,
        ) as response:
            status, answer, wait = await _read(response)
    return RegistrationOutcome(status, answer)


def _headers(params: DeviceParams) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if params.sas_token is not None:
        headers["Authorization"] = params.sas_token
    return headers


async def _read(response: aiohttp.ClientResponse) -> tuple[int, JsonObject, float]:
    """Status, body (an object; non-JSON text becomes `message`) and the wait it asks for."""
    raw = await response.read()
    body: Any
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"message": raw.decode("utf-8", "replace")[:500]}
    return response.status, body, _retry_after(response.headers.get("retry-after"))


def _retry_after(value: str | None) -> float:
    try:
        seconds = float(value) if value is not None else DEFAULT_RETRY_AFTER_SECONDS
    except ValueError:
        seconds = DEFAULT_RETRY_AFTER_SECONDS
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)
