"""The examples shown in README.md and docs/ run unmodified against a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import RunningServer

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).parents[2] / "docs" / "examples"


def test_python_service_sdk_example_enrolls_a_group(server: RunningServer) -> None:
    env = dict(
        os.environ, OPENDPS_CONNECTION_STRING=server.connection_string, OPENDPS_CA=server.ca_file
    )
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "enroll_with_python_sdk.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.startswith("factory-line-1 ")
    assert out.stdout.strip().endswith("primary key length: 88")
