"""`opendps compute-device-key`: a device's key derived from its group key, computed locally."""

from __future__ import annotations

import binascii
from typing import Annotated

import typer

from opendps.attestation.symmetric import derive_device_key
from opendps.cli.client import CliError
from opendps.cli.options import Invocation, operator_command
from opendps.model.errors import DpsError
from opendps.model.ids import parse_registration_id


def add_device_key_command(app: typer.Typer) -> None:
    @operator_command(app, "compute-device-key", connected=False)
    def compute_device_key(
        invocation: Invocation,
        key: Annotated[str, typer.Option(help="The enrollment group's symmetric key (base64).")],
        registration_id: Annotated[str, typer.Option(help="The device's registration ID.")],
    ) -> None:
        """Derive a group member's device key: base64(HMAC-SHA256(group key, registration ID)).

        The device signs its SAS tokens with this key; the group key never leaves the operator.
        """
        try:
            parse_registration_id(registration_id)
            device_key = derive_device_key(key, registration_id)
        except DpsError as err:
            raise CliError(err.message) from None
        except (binascii.Error, ValueError):
            raise CliError("--key is not valid base64") from None
        if invocation.json_output:
            invocation.emit({"registrationId": registration_id, "deviceKey": device_key}, str)
        else:
            typer.echo(device_key)
