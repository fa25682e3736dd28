from __future__ import annotations

import errno
import socket

import pytest

from opendps.app.serve import StartupError, bind_with_fallback


class Listening:
    sockets: tuple[socket.socket, ...] = ()


class PortOpener:
    """Stands in for a listener's start function: fails the ports given, records every try."""

    def __init__(self, failures: dict[int, int]) -> None:
        self.failures = failures
        self.tried: list[int] = []

    async def __call__(self, port: int) -> Listening:
        self.tried.append(port)
        if port in self.failures:
            code = self.failures[port]
            raise OSError(code, errno.errorcode[code])
        return Listening()


@pytest.mark.parametrize("code", [errno.EACCES, errno.EADDRINUSE])
async def test_an_unusable_default_port_moves_up_by_8000(code: int) -> None:
    opener = PortOpener({443: code})
    bound = await bind_with_fallback("https", 443, explicit=False, start=opener)
    assert opener.tried == [443, 8443]
    assert bound.port == 8443
    assert bound.fallback is not None
    assert (
        f"HTTPS port 443 could not be bound ({errno.errorcode[code]}); listening on 8443"
        in bound.fallback
    )


async def test_a_usable_port_is_used_without_a_message() -> None:
    bound = await bind_with_fallback("mqtt", 8883, explicit=False, start=PortOpener({}))
    assert (bound.port, bound.fallback) == (8883, None)


async def test_an_explicit_port_never_falls_back() -> None:
    opener = PortOpener({443: errno.EACCES})
    with pytest.raises(StartupError, match="cannot listen for https on port 443"):
        await bind_with_fallback("https", 443, explicit=True, start=opener)
    assert opener.tried == [443]


async def test_other_bind_errors_do_not_fall_back() -> None:
    opener = PortOpener({443: errno.EADDRNOTAVAIL})
    with pytest.raises(StartupError):
        await bind_with_fallback("https", 443, explicit=False, start=opener)
    assert opener.tried == [443]


async def test_a_failing_fallback_names_both_ports() -> None:
    opener = PortOpener({443: errno.EACCES, 8443: errno.EADDRINUSE})
    with pytest.raises(
        StartupError, match=r"port 443 \(EACCES\) nor on its fallback 8443 \(EADDRINUSE\)"
    ):
        await bind_with_fallback("https", 443, explicit=False, start=opener)


async def test_no_fallback_beyond_the_last_port() -> None:
    opener = PortOpener({60000: errno.EADDRINUSE})
    with pytest.raises(StartupError):
        await bind_with_fallback("https", 60000, explicit=False, start=opener)
    assert opener.tried == [60000]
