"""Let clients of the Microsoft TPM simulator protocol (tss.js, tpm2-tss `mssim`) use a swtpm.

The Node TPM SDK (`azure-iot-security-tpm` on `tss.js`) can only reach a software TPM through the
protocol of Microsoft's reference simulator (ms-tpm-20-ref `TcpServer.c`); swtpm speaks raw TPM
commands plus its own control protocol. This bridge listens on the simulator's two ports and
translates:

command port (the simulator's 2321), every integer a big-endian u32:
  SEND_COMMAND (8)  ‖ u8 locality ‖ u32 size ‖ command  →  u32 size ‖ response ‖ u32 0
  REMOTE_HANDSHAKE (15) ‖ u32 client version             →  u32 1 ‖ u32 endpoint flags ‖ u32 0
  SET_ALTERNATIVE_RESULT (16) ‖ u32                      →  u32 0
  SESSION_END (20), STOP (21)                            →  connection closed, no answer
platform port (command port + 1; tss.js and tpm2-tss both derive it that way):
  POWER_ON (1), RESET (17), RESTART (18)  →  swtpm CMD_INIT if the TPM was powered off (or on
  RESET/RESTART), then u32 0; every other signal (NV on/off, cancel, physical presence, key cache,
  power off) → u32 0; SESSION_END / STOP → connection closed.

swtpm starts powered on and already past TPM2_Startup (`startup-clear` in `swtpm.py`), so the
POWER_ON and NV_ON that tss.js sends on connect change nothing, and tss.js's own TPM2_Startup is
answered TPM_RC_INITIALIZE, which it accepts. Unknown commands close the connection, as the
reference simulator does.

swtpm serves one connection at a time, so the bridge opens one for each TPM command and closes it
at once: several bridge clients can interleave (each command is atomic, as on a real TPM) and a
test can still reach swtpm directly (`Swtpm.tcti`) while a client stays connected to the bridge.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.tpmsim.swtpm import Swtpm

logger = logging.getLogger(__name__)

# Microsoft simulator protocol (ms-tpm-20-ref TpmTcpProtocol.h).
SIM_POWER_ON = 1
SIM_POWER_OFF = 2
SIM_SEND_COMMAND = 8
SIM_REMOTE_HANDSHAKE = 15
SIM_SET_ALTERNATIVE_RESULT = 16
SIM_RESET = 17
SIM_RESTART = 18
SIM_SESSION_END = 20
SIM_STOP = 21
SIM_ACK = 0
SIM_SERVER_VERSION = 1
# What the reference simulator reports: tpmPlatformAvailable | tpmInRawMode | tpmSupportsPP.
SIM_ENDPOINT_FLAGS = 0x1 | 0x4 | 0x8
# Platform signals the simulator just acknowledges here: PHYS_PRES_ON/OFF (3, 4),
# CANCEL_ON/OFF (9, 10: commands run synchronously, nothing is ever in flight to cancel),
# NV_ON/OFF (11, 12: swtpm's NV is always available), KEY_CACHE_ON/OFF (13, 14).
SIM_ACKNOWLEDGED_SIGNALS = frozenset({3, 4, 9, 10, 11, 12, 13, 14})

# swtpm control channel (swtpm include/swtpm/tpm_ioctl.h, "Commands used by the non-CUSE TPMs").
SWTPM_CMD_INIT = 0x02
SWTPM_CMD_SET_LOCALITY = 0x05

TPM_RESPONSE_HEADER_SIZE = 10  # tag u16 ‖ size u32 ‖ response code u32
MAX_TPM_MESSAGE_SIZE = 1 << 20  # the reference simulator's MAX_BUFFER


class PeerClosed(Exception):
    """The other end closed the connection (possibly in the middle of a message)."""


def recv_exact(sock: socket.socket, size: int) -> bytes:
    """Exactly `size` bytes from `sock`, however TCP splits them."""
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            raise PeerClosed
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def recv_u32(sock: socket.socket) -> int:
    value: int = struct.unpack(">I", recv_exact(sock, 4))[0]
    return value


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


class SwtpmLink:
    """The swtpm side: raw TPM commands and the control commands the simulator signals map to.

    One lock makes "set the locality, run the command" atomic across bridge connections.
    """

    def __init__(self, swtpm: Swtpm) -> None:
        self._swtpm = swtpm
        self._lock = threading.Lock()
        self._locality = 0
        self._powered_on = True  # swtpm.py starts it with `startup-clear`

    def execute(self, locality: int, command: bytes) -> bytes:
        with self._lock:
            if locality != self._locality:
                self._control(SWTPM_CMD_SET_LOCALITY, bytes([locality]))
                self._locality = locality
            with socket.create_connection((self._swtpm.host, self._swtpm.server_port)) as tpm:
                tpm.sendall(command)
                header = recv_exact(tpm, TPM_RESPONSE_HEADER_SIZE)
                size = struct.unpack(">I", header[2:6])[0]
                if not TPM_RESPONSE_HEADER_SIZE <= size <= MAX_TPM_MESSAGE_SIZE:
                    raise ValueError(f"swtpm answered with a response size of {size}")
                return header + recv_exact(tpm, size - TPM_RESPONSE_HEADER_SIZE)

    def power_on(self, reset: bool) -> None:
        """_TPM_Init (swtpm CMD_INIT) when the simulator would run it: after a power-off or on reset."""
        with self._lock:
            if reset or not self._powered_on:
                self._control(SWTPM_CMD_INIT, u32(0))
                self._locality = 0
            self._powered_on = True

    def power_off(self) -> None:
        with self._lock:
            self._powered_on = False

    def _control(self, command: int, payload: bytes) -> None:
        with socket.create_connection((self._swtpm.host, self._swtpm.ctrl_port)) as ctrl:
            ctrl.sendall(u32(command) + payload)
            result = recv_u32(ctrl)
        if result != 0:
            raise RuntimeError(
                f"swtpm control command {command} failed with TPM result {result:#x}"
            )


class _BridgeServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler], link: SwtpmLink) -> None:
        self.link = link
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def track(self, connection: socket.socket, is_open: bool) -> None:
        with self._open_lock:
            if is_open:
                self._open.add(connection)
            else:
                self._open.discard(connection)

    def close_connections(self) -> None:
        """Wake handler threads blocked in recv so they end with the bridge."""
        with self._open_lock:
            for connection in self._open:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already gone


class _Handler(socketserver.BaseRequestHandler):
    server: _BridgeServer
    request: socket.socket

    def handle(self) -> None:
        self.server.track(self.request, True)
        try:
            while True:
                command = recv_u32(self.request)
                logger.debug("%s: simulator command %d", type(self).__name__, command)
                if not self.serve_one(command):
                    break
        except PeerClosed:
            pass  # a client disconnecting without SESSION_END is normal (tss.js does)
        except OSError as error:
            logger.debug("simulator connection ended: %s", error)
        finally:
            self.server.track(self.request, False)

    def serve_one(self, command: int) -> bool:
        """Serve one simulator command; False when the connection is to be closed."""
        raise NotImplementedError


class _CommandHandler(_Handler):
    def serve_one(self, command: int) -> bool:
        link = self.server.link
        if command == SIM_SEND_COMMAND:
            locality = recv_exact(self.request, 1)[0]
            size = recv_u32(self.request)
            if size > MAX_TPM_MESSAGE_SIZE:
                logger.warning("TPM command of %d bytes refused", size)
                return False
            response = link.execute(locality, recv_exact(self.request, size))
            self.request.sendall(u32(len(response)) + response + u32(SIM_ACK))
            return True
        if command == SIM_REMOTE_HANDSHAKE:
            if recv_u32(self.request) == 0:  # client version 0 is refused by the reference too
                return False
            self.request.sendall(u32(SIM_SERVER_VERSION) + u32(SIM_ENDPOINT_FLAGS) + u32(SIM_ACK))
            return True
        if command == SIM_SET_ALTERNATIVE_RESULT:
            recv_u32(self.request)  # not applicable to a simulator
            self.request.sendall(u32(SIM_ACK))
            return True
        if command not in (SIM_SESSION_END, SIM_STOP):
            logger.warning("unsupported simulator command %d on the command port", command)
        return False


class _PlatformHandler(_Handler):
    def serve_one(self, command: int) -> bool:
        link = self.server.link
        if command == SIM_POWER_ON:
            link.power_on(reset=False)
        elif command in (SIM_RESET, SIM_RESTART):
            link.power_on(reset=True)
        elif command == SIM_POWER_OFF:
            link.power_off()
        elif command in (SIM_SESSION_END, SIM_STOP):
            return False
        elif command not in SIM_ACKNOWLEDGED_SIGNALS:
            logger.warning("unsupported simulator signal %d on the platform port", command)
            self.request.sendall(u32(1))  # the reference's answer, before it hangs up
            return False
        self.request.sendall(u32(SIM_ACK))
        return True


@dataclass(frozen=True)
class Bridge:
    """A running bridge: simulator commands on `command_port`, platform signals on `platform_port`."""

    host: str
    command_port: int
    platform_port: int

    @property
    def tcti(self) -> str:
        """The tpm2-tss TCTI string for this bridge (tpm2-tools `--tcti`)."""
        return f"mssim:host={self.host},port={self.command_port}"


def _bind_servers(
    host: str, command_port: int, platform_port: int | None, link: SwtpmLink
) -> tuple[_BridgeServer, _BridgeServer]:
    """Bind both ports; with `platform_port` None it is command port + 1, as clients assume."""
    attempts = 50 if command_port == 0 and platform_port is None else 1
    for attempt in range(attempts):
        command = _BridgeServer((host, command_port), _CommandHandler, link)
        wanted = command.port + 1 if platform_port is None else platform_port
        try:
            return command, _BridgeServer((host, wanted), _PlatformHandler, link)
        except OSError:
            command.server_close()
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@contextmanager
def start_bridge(
    swtpm: Swtpm,
    host: str = "127.0.0.1",
    command_port: int = 0,
    platform_port: int | None = None,
) -> Iterator[Bridge]:
    """Serve the simulator protocol for `swtpm` on loopback until exit (0 = a free port)."""
    servers = _bind_servers(host, command_port, platform_port, SwtpmLink(swtpm))
    threads = [
        threading.Thread(
            target=server.serve_forever, name=f"mssim-bridge-{server.port}", daemon=True
        )
        for server in servers
    ]
    for thread in threads:
        thread.start()
    try:
        yield Bridge(host, servers[0].port, servers[1].port)
    finally:
        for server in servers:
            server.shutdown()
            server.close_connections()
            server.server_close()
        for thread in threads:
            thread.join()
