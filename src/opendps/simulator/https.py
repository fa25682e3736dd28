"""A thin DPS device client over HTTPS (protocol.md §1), on aiohttp: register, then poll.

`PUT …/register` answers 200 with a terminal status or 202 `assigning` with an operation ID;
the client then polls `GET …/operations/{id}`, waiting the `retry-after` the server asks for
(§1.5), until the status is terminal. An X.509 device presents its chain in the TLS handshake
and sends no `Authorization` header (§3). A TPM device first registers without one, is
challenged with a 401 carrying an `authenticationKey`, and repeats the register with a SAS
token its TPM signed (§6.2, simulator/tpm.py).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from typing import Any
from urllib.parse import quote

import aiohttp

from opendps.model.json import JsonObject
from opendps.simulator.api import DeviceParams, RegistrationOutcome, TpmSettings
from opendps.simulator.channels import client_ssl_context, failure, url_host
from opendps.simulator.tpm import (
    challenge_key,
    install_hub_key,
    open_tpm,
    tpm_attestation_body,
    tpm_sas_token,
)
from opendps.simulator.tpm_device import TpmError

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
    except TpmError as err:
        return failure(str(err))


async def _register(
    session: aiohttp.ClientSession, context: ssl.SSLContext, params: DeviceParams
) -> RegistrationOutcome:
    device = _DeviceHttp(session, context, params)
    body: JsonObject = {"registrationId": params.registration_id}
    if params.payload is not None:
        body["payload"] = params.payload
    if params.tpm is not None:
        return await _register_tpm(device, params, params.tpm, body)
    return await device.register(body, _headers(params.sas_token))


async def _register_tpm(
    device: _DeviceHttp, params: DeviceParams, settings: TpmSettings, body: JsonObject
) -> RegistrationOutcome:
    """The TPM challenge (protocol.md §6.2): register without a token, unwrap the 401's key
    into the TPM, register again (and poll) with the token the TPM signs."""
    async with open_tpm(settings) as tpm:
        body = {**body, "tpm": tpm_attestation_body(await tpm.ensure_keys())}
        status, answer, _wait = await device.put_register(body, _headers(None))
        blob = challenge_key(status, answer)
        if blob is None:
            return RegistrationOutcome(status, answer)
        await tpm.activate_and_import(blob)
        token = await tpm_sas_token(tpm, params.id_scope, params.registration_id, now=time.time())
        outcome = await device.register(body, _headers(token))
        return await install_hub_key(tpm, outcome)


class _DeviceHttp:
    """The device's two requests against one registration's URL."""

    def __init__(
        self, session: aiohttp.ClientSession, context: ssl.SSLContext, params: DeviceParams
    ) -> None:
        self._session = session
        self._context = context
        self._base = (
            f"https://{url_host(params.host)}:{params.port}/{quote(params.id_scope, safe='')}"
            f"/registrations/{quote(params.registration_id, safe='')}"
        )
        self._query = {"api-version": DEVICE_API_VERSION}

    async def register(self, body: JsonObject, headers: dict[str, str]) -> RegistrationOutcome:
        """PUT register, then poll while the answer is `assigning`."""
        status, answer, wait = await self.put_register(body, headers)
        while status < 400 and answer.get("status") == "assigning":
            operation_id = answer.get("operationId")
            if not isinstance(operation_id, str) or not operation_id:
                return RegistrationOutcome(status, answer)
            await asyncio.sleep(wait)
            status, answer, wait = await self._get_operation(operation_id, headers)
        return RegistrationOutcome(status, answer)

    async def put_register(
        self, body: JsonObject, headers: dict[str, str]
    ) -> tuple[int, JsonObject, float]:
        async with self._session.put(
            self._base + "/register",
            params=self._query,
            json=body,
            headers=headers,
            ssl=self._context,
        ) as response:
            return await _read(response)

    async def _get_operation(
        self, operation_id: str, headers: dict[str, str]
    ) -> tuple[int, JsonObject, float]:
        async with self._session.get(
            f"{self._base}/operations/{quote(operation_id, safe='')}",
            params=self._query,
            headers=headers,
            ssl=self._context,
        ) as response:
            return await _read(response)


def _headers(sas_token: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if sas_token is not None:
        headers["Authorization"] = sas_token
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
