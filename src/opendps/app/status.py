"""The status document: what a running server tells operators and scripts about itself.

`opendps serve` writes it, plus `pid` and `adminKeyFile`, to `<data-dir>/state.json` (mode
0600) once every listener is bound, and removes the file on a clean shutdown. `opendps status`
reads it back: `--json` prints exactly the document's keys, otherwise a table. Other tools (the
CLI command groups, the end-to-end harness) read state.json for the endpoints and admin key.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from opendps.app.devpki import PRIVATE_FILE_MODE, write_atomically

STATE_FILE = "state.json"
# The Node service client dials 443 whatever the connection string says (protocol.md §10), so
# the connection string names a port only when it is not this one.
IMPLICIT_HTTPS_PORT = 443


class StatusError(Exception):
    """No readable state.json (the message says what to do)."""


@dataclass(frozen=True, slots=True)
class Endpoints:
    https: str
    mqtt: str
    amqp: str


@dataclass(frozen=True, slots=True)
class StatusDocument:
    id_scope: str
    # None when the owner policy of the default instance has been deleted.
    service_connection_string: str | None
    ca_certificate: Path
    endpoints: Endpoints
    data_dir: Path
    # Database URL without its password.
    database: str

    def to_json(self) -> dict[str, Any]:
        return {
            "idScope": self.id_scope,
            "serviceConnectionString": self.service_connection_string,
            "caCertificate": str(self.ca_certificate),
            "endpoints": {
                "https": self.endpoints.https,
                "mqtt": self.endpoints.mqtt,
                "amqp": self.endpoints.amqp,
            },
            "dataDir": str(self.data_dir),
            "database": self.database,
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> StatusDocument:
        endpoints = body["endpoints"]
        return cls(
            id_scope=body["idScope"],
            service_connection_string=body["serviceConnectionString"],
            ca_certificate=Path(body["caCertificate"]),
            endpoints=Endpoints(endpoints["https"], endpoints["mqtt"], endpoints["amqp"]),
            data_dir=Path(body["dataDir"]),
            database=body["database"],
        )


@dataclass(frozen=True, slots=True)
class ServerState:
    """The content of state.json."""

    status: StatusDocument
    pid: int
    admin_key_file: Path


def host_port(host: str, port: int) -> str:
    """`host:port`, with IPv6 addresses in brackets."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def endpoint_url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://{host_port(host, port)}"


def service_connection_string(host: str, https_port: int, policy_name: str, key: str) -> str:
    """Azure's service connection string (protocol.md §7.4), port omitted when it is 443."""
    host_name = host if https_port == IMPLICIT_HTTPS_PORT else host_port(host, https_port)
    return f"HostName={host_name};SharedAccessKeyName={policy_name};SharedAccessKey={key}"


def write_state(data_dir: Path, state: ServerState) -> Path:
    body = state.status.to_json() | {"pid": state.pid, "adminKeyFile": str(state.admin_key_file)}
    path = data_dir / STATE_FILE
    write_atomically(path, json.dumps(body, indent=2).encode() + b"\n", PRIVATE_FILE_MODE)
    return path


def read_state(data_dir: Path) -> ServerState:
    """Raises StatusError when state.json is missing or unreadable."""
    path = data_dir / STATE_FILE
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        return ServerState(
            status=StatusDocument.from_json(body),
            pid=int(body["pid"]),
            admin_key_file=Path(body["adminKeyFile"]),
        )
    except FileNotFoundError:
        raise StatusError(
            f"no server is running with data dir {data_dir} ({STATE_FILE} not found); "
            "start one with `opendps serve`"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise StatusError(f"{path} is unreadable: {err}") from None


def remove_state(data_dir: Path) -> None:
    (data_dir / STATE_FILE).unlink(missing_ok=True)


def is_process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as err:
        # EPERM: the process exists but belongs to someone else.
        return err.errno == errno.EPERM
    return True


def status_rows(status: StatusDocument) -> list[tuple[str, str]]:
    """The document as (label, value) rows, for `opendps status` and the serve banner."""
    return [
        ("HTTPS endpoint", status.endpoints.https),
        ("MQTT endpoint", status.endpoints.mqtt),
        ("AMQP endpoint", status.endpoints.amqp),
        ("ID scope", status.id_scope),
        ("Service connection string", status.service_connection_string or "(owner policy deleted)"),
        ("CA certificate", str(status.ca_certificate)),
        ("Data dir", str(status.data_dir)),
        ("Database", status.database),
    ]


def print_status(console: Console, status: StatusDocument) -> None:
    """Print the rows as an aligned two-column table.

    Values are never folded: the terminal wraps long lines itself, so a connection string
    copied from the screen stays one piece.
    """
    rows = status_rows(status)
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        line = Text(f"{label:<{width}}  ", style="bold")
        line.append(value)
        console.print(line, soft_wrap=True)
