"""Start a real software TPM (Debian `swtpm`) on loopback for a test, with its state in a temp dir.

swtpm takes raw TPM 2.0 commands on its server socket and its own control protocol on the
control socket (`TCTI swtpm:` in the tpm2-tss world). `--flags startup-clear` powers it on and
sends TPM2_Startup(CLEAR), so it is ready for commands as soon as the server port accepts.
Tests that need one call `start_swtpm`; where swtpm is not installed they skip with that reason
(`.ci/run` installs it).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Swtpm:
    """A running swtpm: raw TPM commands on `server_port`, control commands on `ctrl_port`."""

    host: str
    server_port: int
    ctrl_port: int
    state_dir: Path

    @property
    def tcti(self) -> str:
        """The tpm2-tss TCTI string (tpm2-tools `--tcti`, tpm2-pytss `TCTILdr.parse`)."""
        return f"swtpm:host={self.host},port={self.server_port}"


def require_swtpm() -> str:
    """The swtpm executable, or skip the test with the reason."""
    path = shutil.which("swtpm")
    if path is None:
        pytest.skip("swtpm is not installed (Debian package `swtpm`; .ci/run installs it)")
    return path


def _free_port_pair(host: str) -> int:
    """A port P such that P and P + 1 are both free now (swtpm wants two)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        if port >= 65535:
            continue
        with socket.socket() as second:
            try:
                second.bind((host, port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of loopback ports")


def _wait_accepting(host: str, port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"swtpm exited with {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"swtpm did not listen on {host}:{port} within {START_TIMEOUT_SECONDS} s")


@contextmanager
def start_swtpm(state_dir: Path, host: str = "127.0.0.1") -> Iterator[Swtpm]:
    """Run swtpm with its state in `state_dir` (kept between starts: same EK seed) until exit."""
    executable = require_swtpm()
    state_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port_pair(host)
    log = (state_dir / "swtpm.log").open("ab")
    process = subprocess.Popen(
        [
            executable,
            "socket",
            "--tpm2",
            "--tpmstate",
            f"dir={state_dir}",
            "--server",
            f"type=tcp,port={port},bindaddr={host}",
            "--ctrl",
            f"type=tcp,port={port + 1},bindaddr={host}",
            "--flags",
            "not-need-init,startup-clear",
        ],
        stdout=log,
        stderr=log,
    )
    try:
        _wait_accepting(host, port, process)
        yield Swtpm(host, port, port + 1, state_dir)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
