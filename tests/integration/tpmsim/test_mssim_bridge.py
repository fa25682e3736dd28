"""The Microsoft-simulator bridge (tests/tpmsim/mssim_bridge.py) in front of a real swtpm.

Three independent clients check it: tpm2-tools through tpm2-tss's `mssim` TCTI (another
implementation of the simulator protocol than tss.js), raw sockets that send exactly what tss.js
sends (tss.js `TpmTcpDevice`), and the Node TPM SDK itself through `device_register_tpm.js`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.tpmsim.mssim_bridge import Bridge, recv_exact, start_bridge
from tests.tpmsim.swtpm import Swtpm, start_swtpm

NODE_DIR = Path(__file__).resolve().parents[2] / "e2e" / "node"
SOCKET_TIMEOUT_SECONDS = 30  # a hang fails the test instead of blocking it forever
EK_HANDLE = "0x81010001"
SRK_HANDLE = "0x81000001"

TPM_RC_SUCCESS = 0
TPM_RC_INITIALIZE = 0x100
GET_RANDOM_8 = bytes.fromhex("80010000000c0000017b0008")
STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


def read_u32(sock: socket.socket) -> int:
    value: int = struct.unpack(">I", recv_exact(sock, 4))[0]
    return value


@pytest.fixture
def swtpm(tmp_path: Path) -> Iterator[Swtpm]:
    with start_swtpm(tmp_path / "tpm") as running:
        yield running


@pytest.fixture
def bridge(swtpm: Swtpm) -> Iterator[Bridge]:
    with start_bridge(swtpm) as running:
        yield running


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_SECONDS)


def send_tpm_command(sock: socket.socket, command: bytes, byte_by_byte: bool = False) -> bytes:
    """One simulator SEND_COMMAND round trip; the TPM response, after checking the framing."""
    frame = u32(8) + b"\x00" + u32(len(command)) + command
    if byte_by_byte:  # the bridge must reassemble a frame from any split
        for index in range(len(frame)):
            sock.sendall(frame[index : index + 1])
    else:
        sock.sendall(frame)
    response = recv_exact(sock, read_u32(sock))
    assert read_u32(sock) == 0, "the trailing ack"
    return response


def response_code(response: bytes) -> int:
    tag, size, code = struct.unpack(">HII", response[:10])
    assert tag == 0x8001 and size == len(response)
    return int(code)


def tpm2(tool: str, tcti: str, *args: str) -> str:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (Debian package `tpm2-tools`)")
    done = subprocess.run(
        [tool, "-T", tcti, *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"{tool} {args}: {done.stderr}"
    return done.stdout


def persistent_handles(tcti: str) -> list[str]:
    listing = tpm2("tpm2_getcap", tcti, "handles-persistent")  # "- 0x81000001" lines
    return [token for token in listing.split() if token != "-"]


def test_tpm2_tools_through_the_bridge_reach_the_same_tpm(
    swtpm: Swtpm, bridge: Bridge, tmp_path: Path
) -> None:
    assert len(bytes.fromhex(tpm2("tpm2_getrandom", bridge.tcti, "--hex", "16"))) == 16
    context = str(tmp_path / "primary.ctx")
    tpm2("tpm2_createprimary", bridge.tcti, "-C", "o", "-c", context)
    tpm2("tpm2_evictcontrol", bridge.tcti, "-C", "o", "-c", context, "0x81000042")

    # Seen directly on swtpm's own socket while the bridge is still up.
    assert persistent_handles(swtpm.tcti) == ["0x81000042"]


def test_handshake_power_on_and_startup_as_tss_js_does_them(bridge: Bridge) -> None:
    with connect(bridge.command_port) as command, connect(bridge.platform_port) as platform:
        command.sendall(u32(15) + u32(1))
        assert recv_exact(command, 12) == u32(1) + u32(0x1 | 0x4 | 0x8) + u32(0)

        for signal in (1, 11):  # POWER_ON, NV_ON
            platform.sendall(u32(signal))
            assert read_u32(platform) == 0

        # swtpm is already started, which tss.js accepts.
        assert response_code(send_tpm_command(command, STARTUP_CLEAR)) == TPM_RC_INITIALIZE
        random = send_tpm_command(command, GET_RANDOM_8, byte_by_byte=True)
        assert response_code(random) == TPM_RC_SUCCESS and len(random) == 10 + 2 + 8


def test_power_cycle_resets_the_tpm(bridge: Bridge) -> None:
    with connect(bridge.command_port) as command, connect(bridge.platform_port) as platform:
        for signal in (2, 1):  # POWER_OFF, POWER_ON: a _TPM_Init, TPM2_Startup needed again
            platform.sendall(u32(signal))
            assert read_u32(platform) == 0
        assert response_code(send_tpm_command(command, GET_RANDOM_8)) == TPM_RC_INITIALIZE
        assert response_code(send_tpm_command(command, STARTUP_CLEAR)) == TPM_RC_SUCCESS
        assert response_code(send_tpm_command(command, GET_RANDOM_8)) == TPM_RC_SUCCESS


def test_connections_interleave_and_session_end_closes_only_its_own(bridge: Bridge) -> None:
    with connect(bridge.command_port) as first, connect(bridge.command_port) as second:
        for _ in range(3):
            assert response_code(send_tpm_command(first, GET_RANDOM_8)) == TPM_RC_SUCCESS
            assert response_code(send_tpm_command(second, GET_RANDOM_8)) == TPM_RC_SUCCESS
        first.sendall(u32(20))  # SESSION_END: no answer, the bridge hangs up
        assert first.recv(1) == b""
        assert response_code(send_tpm_command(second, GET_RANDOM_8)) == TPM_RC_SUCCESS


def test_unknown_commands_close_the_connection(bridge: Bridge) -> None:
    with connect(bridge.command_port) as command:
        command.sendall(u32(99))
        assert command.recv(1) == b""
    with connect(bridge.platform_port) as platform:
        platform.sendall(u32(99))
        assert read_u32(platform) == 1  # the reference simulator's refusal, then it hangs up
        assert platform.recv(1) == b""


def test_node_tpm_sdk_creates_its_keys_through_the_bridge(swtpm: Swtpm, bridge: Bridge) -> None:
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "tss.js").is_dir():
        pytest.skip(f"Node or the Node TPM SDK is missing: run `npm ci` in {NODE_DIR}")
    assert persistent_handles(swtpm.tcti) == []

    done = subprocess.run(
        ["node", "device_register_tpm.js", "ek", "--tpm-port", str(bridge.command_port)],
        cwd=NODE_DIR,
        capture_output=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    keys = json.loads(done.stdout)
    endorsement_key = base64.b64decode(keys["endorsementKey"])
    assert len(endorsement_key) == 316  # RSA-2048 EK from the SDK template (protocol.md §6.4)
    digest = hashlib.sha256(endorsement_key).digest()
    assert keys["registrationId"] == base64.b32encode(digest).decode().lower().rstrip("=")
    assert persistent_handles(swtpm.tcti) == [SRK_HANDLE, EK_HANDLE]
