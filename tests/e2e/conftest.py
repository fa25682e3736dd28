"""Fixtures of the end-to-end suite (see harness.py for how the server is run)."""

from __future__ import annotations

import fcntl
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import (
    NODE_DIR,
    STANDARD_HTTPS_PORT,
    RunningServer,
    can_bind,
    start_server,
    stop_server,
)

# Several checkouts on one machine (developers, CI) may run this suite at once; the standard
# ports allow one server, so a run waits for the others here instead of failing to bind.
PORTS_LOCK_FILE = Path(tempfile.gettempdir()) / "opendps-standard-ports.lock"


@pytest.fixture(scope="session")
def standard_ports() -> Iterator[None]:
    with PORTS_LOCK_FILE.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def server(
    standard_ports: None, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    reason = can_bind(STANDARD_HTTPS_PORT)
    if reason:
        pytest.skip(reason)
    running = start_server(tmp_path_factory.mktemp("e2e"), request.param)
    try:
        yield running
    finally:
        code = stop_server(running)
        assert code == 0, f"opendps serve exited with {code} on SIGTERM:\n{running.log_text()}"


@pytest.fixture(scope="session")
def node_modules() -> Path:
    if shutil.which("node") is None:
        pytest.skip("node is not installed; the Node SDK end-to-end tests need Node 20")
    modules = NODE_DIR / "node_modules"
    if not modules.is_dir():
        pytest.skip(f"Node clients are not installed: run `npm ci` in {NODE_DIR}")
    return modules
