"""CPU time and memory of a process tree, read from /proc (Linux).

CPU time, not wall time, is the bench's main figure: on a shared machine the server's CPU
seconds per registration stay put while throughput and latency move with the neighbours' load.
A server running several workers is one tree, so the figures cover the process and all its
descendants.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")
# utime and stime are fields 14 and 15 of /proc/<pid>/stat (proc(5)), counted in clock ticks.
_UTIME_FIELD = 13
_STIME_FIELD = 14
_PPID_FIELD = 3


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    after_name = text[text.rindex(")") + 2 :].split()
    return [str(pid), "comm", *after_name]


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[_PPID_FIELD]), []).append(int(entry.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, []))
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` and its live descendants.

    Raises ProcessLookupError when `pid` itself is gone.
    """
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    total = 0
    for member in descendants(pid):
        fields = _stat_fields(member)
        if fields is None:
            if member == pid:
                raise ProcessLookupError(pid)
            continue
        total += int(fields[_UTIME_FIELD]) + int(fields[_STIME_FIELD])
    return total / ticks_per_second


def rss_bytes(pid: int) -> int:
    """Resident memory (VmRSS) of `pid` and its live descendants, summed."""
    total = 0
    for member in descendants(pid):
        try:
            lines = (PROC / str(member) / "status").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024  # reported in kB
    return total
