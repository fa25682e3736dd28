from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from opendps.app.status import (
    Endpoints,
    ServerState,
    StatusDocument,
    StatusError,
    endpoint_url,
    is_process_alive,
    read_state,
    remove_state,
    service_connection_string,
    write_state,
)

STATUS_KEYS = {
    "idScope",
    "serviceConnectionString",
    "caCertificate",
    "endpoints",
    "dataDir",
    "database",
}


def _document(tmp_path: Path) -> StatusDocument:
    return StatusDocument(
        id_scope="0ne00000A0B",
        service_connection_string="HostName=localhost;SharedAccessKeyName=p;SharedAccessKey=k",
        ca_certificate=tmp_path / "ca.pem",
        endpoints=Endpoints(
            endpoint_url("https", "localhost", 443),
            endpoint_url("mqtts", "localhost", 8883),
            endpoint_url("amqps", "localhost", 5671),
        ),
        data_dir=tmp_path,
        database=f"sqlite:///{tmp_path}/opendps.db",
    )


def test_status_json_has_exactly_the_documented_keys(tmp_path: Path) -> None:
    body = _document(tmp_path).to_json()
    assert set(body) == STATUS_KEYS
    assert body["endpoints"] == {
        "https": "https://localhost:443",
        "mqtt": "mqtts://localhost:8883",
        "amqp": "amqps://localhost:5671",
    }
    assert body["caCertificate"] == str(tmp_path / "ca.pem")


def test_state_file_adds_pid_and_admin_key_file_and_is_owner_only(tmp_path: Path) -> None:
    state = ServerState(_document(tmp_path), pid=os.getpid(), admin_key_file=tmp_path / "admin.key")
    path = write_state(tmp_path, state)
    body = json.loads(path.read_text())
    assert set(body) == STATUS_KEYS | {"pid", "adminKeyFile"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_state(tmp_path) == state


def test_missing_state_file_says_to_start_the_server(tmp_path: Path) -> None:
    with pytest.raises(StatusError, match="opendps serve"):
        read_state(tmp_path)


def test_removed_state_file_reads_as_not_running(tmp_path: Path) -> None:
    write_state(tmp_path, ServerState(_document(tmp_path), 1, tmp_path / "admin.key"))
    remove_state(tmp_path)
    with pytest.raises(StatusError):
        read_state(tmp_path)


def test_connection_string_omits_port_443_and_names_any_other() -> None:
    assert service_connection_string("localhost", 443, "owner", "a2V5") == (
        "HostName=localhost;SharedAccessKeyName=owner;SharedAccessKey=a2V5"
    )
    assert service_connection_string("localhost", 8443, "owner", "a2V5").startswith(
        "HostName=localhost:8443;"
    )


def test_ipv6_hosts_are_bracketed_in_urls() -> None:
    assert endpoint_url("https", "::1", 8443) == "https://[::1]:8443"
    assert endpoint_url("https", "127.0.0.1", 8443) == "https://127.0.0.1:8443"


def test_own_process_is_alive_and_a_reaped_one_is_not() -> None:
    assert is_process_alive(os.getpid())
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    assert not is_process_alive(pid)
