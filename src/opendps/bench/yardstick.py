"""The yardstick: Mosquitto doing the same TLS and MQTT work as a registration, in C.

A registration over MQTT costs the server a TLS handshake, CONNECT, SUBSCRIBE, one PUBLISH in
and one out, DISCONNECT, plus our own work (SAS check, allocation, row writes). Mosquitto's
CPU per connect + subscribe + publish + receive cycle, with the same certificate, TLS version
and key exchange, is therefore close to the physical floor for a registration, and the bench
reports our cost as a ratio to it (ARCHITECTURE §5): a figure that holds across machines.

Mosquitto runs from a generated config: one TLS listener on a free loopback port with the dev
PKI's server certificate, anonymous clients, no client certificates, no persistence, no log.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT_SECONDS = 10.0
# Mosquitto's default cap is 1024 connections: at most one per concurrent cycle is open, but
# closed sockets linger briefly, so a generous limit keeps cycles from being refused.
MAX_CONNECTIONS = 100_000


class YardstickError(Exception):
    """Mosquitto is missing or would not start."""


@dataclass(frozen=True, slots=True)
class Broker:
    pid: int
    port: int


def find_mosquitto() -> str | None:
    """The mosquitto binary (the Debian package puts it in /usr/sbin, outside most PATHs)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((path for path in MOSQUITTO_PATHS if Path(path).is_file()), None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def mosquitto_config(port: int, ca_file: Path, cert_file: Path, key_file: Path, tls: str) -> str:
    return "\n".join(
        [
            # Run as whoever runs the bench: started as root, Mosquitto would otherwise switch
            # to the `mosquitto` user, who cannot read the bench's private key files.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "per_listener_settings false",
            "allow_anonymous true",
            "persistence false",
            "log_dest none",
            f"listener {port} {LOOPBACK}",
            f"max_connections {MAX_CONNECTIONS}",
            f"cafile {ca_file}",
            f"certfile {cert_file}",
            f"keyfile {key_file}",
            "require_certificate false",
            # Pinned like our server's clients: one TLS version for both sides of the ratio.
            f"tls_version tlsv{tls}",
            "",
        ]
    )


@contextlib.contextmanager
def running_mosquitto(
    binary: str, ca_file: Path, cert_file: Path, key_file: Path, tls_version: str
) -> Iterator[Broker]:
    """Start Mosquitto on a free loopback port; stop it on exit."""
    with tempfile.TemporaryDirectory(prefix="opendps-bench-mosquitto-") as temp:
        port = _free_port()
        config = Path(temp) / "mosquitto.conf"
        config.write_text(mosquitto_config(port, ca_file, cert_file, key_file, tls_version))
        log = Path(temp) / "mosquitto.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [binary, "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
            try:
                _wait_listening(process, port, log)
                yield Broker(process.pid, port)
            finally:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _wait_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = log.read_text(errors="replace")[-500:]
            raise YardstickError(f"mosquitto exited at start: {text}")
        with socket.socket() as probe:
            if probe.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.05)
    raise YardstickError("mosquitto did not start listening in time")
