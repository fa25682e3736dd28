"""`opendps device register`: a device simulator on our own thin DPS client (simulator/).

It signs its SAS token itself (an individual key, or a key derived from a group key),
presents a client certificate chain, or lets a (software) TPM attest it; registers over the
chosen transport, polls until the registration ends and prints the final answer. Defaults come from a local server's state.json
(HTTPS endpoint, ID scope, dev CA), like the operator commands. Exit code 0 only for
`assigned`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from opendps.app.config import DEFAULT_DATA_DIR
from opendps.app.status import ServerState, StatusError, read_state
from opendps.attestation.tpm import default_registration_id
from opendps.cli.client import CliError
from opendps.cli.options import EXIT_FAILURE, Invocation, operator_command
from opendps.cli.output import details, field
from opendps.model.errors import DpsError
from opendps.model.ids import parse_registration_id
from opendps.simulator.amqp import register_amqp
from opendps.simulator.api import DeviceParams, RegistrationOutcome, TpmSettings
from opendps.simulator.credentials import device_sas_token, group_device_key
from opendps.simulator.https import register_https
from opendps.simulator.mqtt import register_mqtt
from opendps.simulator.tpm_device import TPM_PROTOCOLS, TpmDevice, TpmError, tcti_for

app = typer.Typer(help="Simulate a device (our own DPS client, not an Azure SDK).")

Transport = Callable[[DeviceParams], Coroutine[Any, Any, RegistrationOutcome]]

# Transport name -> the simulator client that registers over it.
TRANSPORTS: dict[str, Transport] = {
    "https": register_https,
    "mqtt": functools.partial(register_mqtt, websocket=False),
    "mqtt-ws": functools.partial(register_mqtt, websocket=True),
    "amqp": functools.partial(register_amqp, websocket=False),
    "amqp-ws": functools.partial(register_amqp, websocket=True),
}
DEFAULT_HTTPS_PORT = 443
DEFAULT_MQTT_PORT = 8883
DEFAULT_AMQP_PORT = 5671
# Transports that dial the MQTT port; every other one (MQTT over WebSockets too) the HTTPS port.
MQTT_PORT_TRANSPORTS = frozenset({"mqtt"})
# Transports that dial the AMQP port (AMQP over WebSockets uses the HTTPS port).
AMQP_PORT_TRANSPORTS = frozenset({"amqp"})
# DPS takes TPM attestation over HTTPS and AMQP only (protocol.md §6).
TPM_TRANSPORTS = frozenset({"https", "amqp", "amqp-ws"})
# Where the TPM simulators listen by default (swtpm's and the Microsoft simulator's command port).
DEFAULT_TPM_HOST = "127.0.0.1"
DEFAULT_TPM_PORT = 2321

_ROWS = [
    ("Status", field("status")),
    ("Substatus", field("registrationState.substatus")),
    ("Assigned hub", field("registrationState.assignedHub")),
    ("Device ID", field("registrationState.deviceId")),
    ("Registration ID", field("registrationState.registrationId")),
    ("Enrollment group", field("registrationState.enrollmentGroupId")),
    ("Attestation", field("registrationState.attestationType")),
    ("Payload", field("registrationState.payload")),
    ("Operation ID", field("operationId")),
    ("Hub key in TPM", field("tpmHubKeyHandle")),
    ("Error code", field("registrationState.errorCode")),
    ("Error", field("registrationState.errorMessage")),
    ("Error code", field("errorCode")),
    ("Error", field("message")),
    ("HTTP status", field("httpStatus")),
]


@operator_command(app, "register", connected=False)
def register(
    invocation: Invocation,
    registration_id: Annotated[
        str | None,
        typer.Option(
            help="The device's registration ID (with --tpm, default: derived from the EK).",
            show_default=False,
        ),
    ] = None,
    id_scope: Annotated[
        str | None,
        typer.Option(help="ID scope (default: the local server's).", show_default=False),
    ] = None,
    symmetric_key: Annotated[
        str | None,
        typer.Option(help="The device's own key (individual enrollment).", show_default=False),
    ] = None,
    group_key: Annotated[
        str | None,
        typer.Option(
            help="The enrollment group's key; the device key is derived from it.",
            show_default=False,
        ),
    ] = None,
    certificate: Annotated[
        Path | None,
        typer.Option(
            help="PEM client certificate (chain, leaf first) for X.509.",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(help="PEM private key of --certificate.", show_default=False, dir_okay=False),
    ] = None,
    tpm: Annotated[
        bool,
        typer.Option(
            "--tpm",
            help="Attest with a TPM (a simulator at --tpm-host/--tpm-port, or --tpm-tcti).",
        ),
    ] = False,
    tpm_host: Annotated[str, typer.Option(help="The TPM simulator's host.")] = DEFAULT_TPM_HOST,
    tpm_port: Annotated[
        int, typer.Option(help="The TPM simulator's command port.")
    ] = DEFAULT_TPM_PORT,
    tpm_protocol: Annotated[
        str,
        typer.Option(
            help="The simulator's protocol: swtpm (raw commands) or mssim (Microsoft simulator)."
        ),
    ] = "swtpm",
    tpm_tcti: Annotated[
        str | None,
        typer.Option(
            help="A full tpm2-tss TCTI instead of host/port, e.g. device:/dev/tpmrm0.",
            show_default=False,
        ),
    ] = None,
    transport: Annotated[
        str, typer.Option(help=f"Transport: {', '.join(sorted(TRANSPORTS))}.")
    ] = "https",
    payload: Annotated[
        str | None,
        typer.Option(help="JSON payload for a custom allocation webhook.", show_default=False),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(help="Server host (default: the local server's).", show_default=False),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Server port (default: the local server's).", show_default=False),
    ] = None,
    ca_certificate: Annotated[
        Path | None,
        typer.Option(
            help="CA file to trust (default: the local server's dev CA).",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    data_dir: Annotated[
        Path,
        typer.Option(
            envvar="OPENDPS_DATA_DIR", help="Data dir of a local server, for the defaults."
        ),
    ] = DEFAULT_DATA_DIR,
) -> None:
    """Register a device and print the result (exit code 0 only when assigned)."""
    client = TRANSPORTS.get(transport)
    if client is None:
        raise CliError(f"--transport must be one of {', '.join(sorted(TRANSPORTS))}")
    tpm_settings = _tpm_settings(tpm, transport, tpm_host, tpm_port, tpm_protocol, tpm_tcti)
    state = _state_if_needed(data_dir, id_scope, host, port)
    params = DeviceParams(
        host=host or _state_endpoint(state, transport)[0],
        port=port or _state_endpoint(state, transport)[1],
        id_scope=id_scope or _state(state).status.id_scope,
        registration_id=_registration_id(registration_id, tpm_settings),
        sas_token=None,
        certificate=certificate,
        key=key,
        payload=_payload(payload),
        ca_file=ca_certificate or (state.status.ca_certificate if state else None),
        tpm=tpm_settings,
    )
    params = _with_credential(params, symmetric_key, group_key)
    outcome = asyncio.run(client(params))
    _show(invocation, outcome)
    if not outcome.assigned:
        raise typer.Exit(EXIT_FAILURE)


def _state_if_needed(
    data_dir: Path, id_scope: str | None, host: str | None, port: int | None
) -> ServerState | None:
    try:
        return read_state(data_dir)
    except StatusError as err:
        if id_scope is None or host is None:
            raise CliError(f"{err} (or give --id-scope and --host)") from None
        return None


def _state(state: ServerState | None) -> ServerState:
    if state is None:  # _state_if_needed only returns None when every default was given
        raise CliError("no local server state to take defaults from")
    return state


def _state_endpoint(state: ServerState | None, transport: str = "https") -> tuple[str, int]:
    endpoints = _state(state).status.endpoints
    if transport in MQTT_PORT_TRANSPORTS:
        parts, default_port = urlsplit(endpoints.mqtt), DEFAULT_MQTT_PORT
    elif transport in AMQP_PORT_TRANSPORTS:
        parts, default_port = urlsplit(endpoints.amqp), DEFAULT_AMQP_PORT
    else:
        parts, default_port = urlsplit(endpoints.https), DEFAULT_HTTPS_PORT
    if parts.hostname is None:
        raise CliError(f"the local server's state.json names no endpoint for {transport}")
    return parts.hostname, parts.port or default_port


def _tpm_settings(
    tpm: bool, transport: str, host: str, port: int, protocol: str, tcti: str | None
) -> TpmSettings | None:
    if not tpm:
        if tcti is not None:
            raise CliError("--tpm-tcti needs --tpm")
        return None
    if transport not in TPM_TRANSPORTS:
        raise CliError(
            f"TPM attestation works over {', '.join(sorted(TPM_TRANSPORTS))} only, not {transport}"
        )
    if tcti is not None:
        return TpmSettings(tcti)
    if protocol not in TPM_PROTOCOLS:
        raise CliError(f"--tpm-protocol must be one of {', '.join(TPM_PROTOCOLS)}")
    return TpmSettings(tcti_for(host, port, protocol))


def _registration_id(value: str | None, tpm: TpmSettings | None) -> str:
    """The given ID, or for a TPM device the one the SDKs derive from its EK (§6.1)."""
    if value is None and tpm is None:
        raise CliError("give --registration-id (it is optional only with --tpm)")
    if value is None and tpm is not None:
        try:
            with TpmDevice(tpm.tcti) as device:
                return default_registration_id(device.ensure_keys().endorsement_key)
        except TpmError as err:
            raise CliError(str(err)) from None
    try:
        return parse_registration_id(str(value))
    except DpsError as err:
        raise CliError(err.message) from None


def _payload(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as err:
        raise CliError(f"--payload is not JSON: {err}") from None


def _with_credential(
    params: DeviceParams, symmetric_key: str | None, group_key: str | None
) -> DeviceParams:
    """Exactly one of --symmetric-key, --group-key, --certificate (with --key), --tpm."""
    given = [
        name
        for name, value in (
            ("--symmetric-key", symmetric_key),
            ("--group-key", group_key),
            ("--certificate", params.certificate),
            ("--tpm", params.tpm),
        )
        if value is not None
    ]
    if len(given) != 1:
        raise CliError("give exactly one of --symmetric-key, --group-key, --certificate, --tpm")
    if (params.certificate is None) != (params.key is None):
        raise CliError("--certificate and --key go together")
    if params.certificate is not None or params.tpm is not None:
        return params
    try:
        base64.b64decode(str(group_key or symmetric_key), validate=True)
        device_key = (
            group_device_key(group_key, params.registration_id)
            if group_key is not None
            else str(symmetric_key)
        )
        token = device_sas_token(
            params.id_scope, params.registration_id, device_key, now=time.time()
        )
    except (binascii.Error, ValueError):
        raise CliError(f"{given[0]} is not valid base64") from None
    return DeviceParams(
        host=params.host,
        port=params.port,
        id_scope=params.id_scope,
        registration_id=params.registration_id,
        sas_token=token,
        certificate=None,
        key=None,
        payload=params.payload,
        ca_file=params.ca_file,
    )


def _show(invocation: Invocation, outcome: RegistrationOutcome) -> None:
    body = outcome.body
    if invocation.json_output:
        invocation.emit(body, str)
        return
    shown = dict(body)
    if outcome.status_code is not None and outcome.status_code >= 400:
        shown["httpStatus"] = outcome.status_code
    if outcome.tpm_hub_key_handle is not None:
        shown["tpmHubKeyHandle"] = f"{outcome.tpm_hub_key_handle:#010x}"
    invocation.emit(shown, lambda item: details(item, _ROWS))
