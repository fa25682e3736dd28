"""CPU and memory of a process tree from /proc: our own process and a child of it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from opendps.bench.procstat import cpu_seconds, descendants, rss_bytes


def test_a_child_process_is_part_of_the_tree_and_its_memory() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in descendants(os.getpid())
        own = rss_bytes(child.pid)
        assert own > 0
        assert rss_bytes(os.getpid()) >= own
    finally:
        child.kill()
        child.wait()


def test_cpu_time_grows_with_work() -> None:
    before = cpu_seconds(os.getpid())
    deadline = os.times().user + 0.05
    while os.times().user < deadline:  # burn a few clock ticks of user time
        pass
    assert cpu_seconds(os.getpid()) > before


def test_a_vanished_process_is_reported() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(ProcessLookupError):
        cpu_seconds(child.pid)
