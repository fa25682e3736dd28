"""The server side of the AMQP 1.0 SASL layer (AMQP 1.0 §5.3), sans-I/O.

Why our own and not proton's: the PyPI `python-qpid-proton` wheel is built without Cyrus SASL,
and proton's built-in server SASL implements only ANONYMOUS and EXTERNAL (a PLAIN client gets
`Authentication failed [mech=none]`). Even with Cyrus, proton checks passwords against a SASL
database and never hands the password to the application, while DPS needs the PLAIN password:
it *is* the device's SAS token (protocol.md §4.1). The SASL exchange is three small frames, so
this module speaks it and hands proton the bytes after the SASL layer (the plain AMQP header).

Mechanisms are pluggable: PLAIN and EXTERNAL complete at once (the token is checked later, per
request, by the engine, as Azure does); a mechanism with a challenge-response exchange (the DPS
`TPM` mechanism, protocol.md §4.4, spoken by tpm_sasl.py) is listed in `interactive_mechanisms`,
and the server then reports `SaslInitReceived` / `SaslResponseReceived` and waits for the
caller's `challenge()`, `succeed()` or `fail()`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from proton import Data, DataException, Described

SASL_HEADER = b"AMQP\x03\x01\x00\x00"
AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
HEADER_SIZE = 8

# AMQP 1.0 §5.3.1: every SASL peer accepts frames of 512 octets (MIN-MAX-FRAME-SIZE). A few
# clients send longer sasl-init frames (long SAS tokens, TPM endorsement keys: C splits those at
# 470 bytes only because of this minimum), so allow 4 KiB and refuse anything larger: a SASL
# frame is read whole before it is decoded, and this bounds that buffer.
MAX_SASL_FRAME_BYTES = 4096
# A SASL exchange is init (+ a few response frames for TPM's chunked key); more frames than this
# is a client looping or an attack.
MAX_SASL_FRAMES = 16

FRAME_HEADER = struct.Struct(">IBBH")
SASL_FRAME_TYPE = 0x01

# AMQP 1.0 §5.3.3 descriptors.
SASL_MECHANISMS = 0x40
SASL_INIT = 0x41
SASL_CHALLENGE = 0x42
SASL_RESPONSE = 0x43
SASL_OUTCOME = 0x44

PLAIN = "PLAIN"
EXTERNAL = "EXTERNAL"
ANONYMOUS = "ANONYMOUS"


class SaslCode(IntEnum):
    """sasl-outcome codes (AMQP 1.0 §5.3.3.6)."""

    OK = 0
    AUTH = 1
    SYS = 2
    SYS_PERM = 3
    SYS_TEMP = 4


@dataclass(frozen=True, slots=True)
class SaslIdentity:
    """Who the client said it is. `password` is the PLAIN password (a DPS SAS token): never log it."""

    mechanism: str
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:  # keep the token out of any debug output
        return f"SaslIdentity(mechanism={self.mechanism!r}, username={self.username!r})"


@dataclass(frozen=True, slots=True)
class SaslSucceeded:
    identity: SaslIdentity


@dataclass(frozen=True, slots=True)
class SaslFailed:
    reason: str


@dataclass(frozen=True, slots=True)
class SaslInitReceived:
    """An interactive mechanism started; answer with challenge(), succeed() or fail()."""

    mechanism: str
    initial_response: bytes
    hostname: str | None


@dataclass(frozen=True, slots=True)
class SaslResponseReceived:
    response: bytes


SaslEvent = SaslSucceeded | SaslFailed | SaslInitReceived | SaslResponseReceived


class SaslServer:
    """Feed bytes from the client; read events and the bytes to send back.

    After `SaslSucceeded`, `remainder` holds whatever the client sent after its last SASL frame
    (the AMQP header, if it pipelined it); feed it to the AMQP layer. After `SaslFailed` the
    connection must be closed once `data_to_send()` is written.
    """

    def __init__(
        self,
        mechanisms: tuple[str, ...] = (PLAIN, EXTERNAL),
        *,
        interactive_mechanisms: tuple[str, ...] = (),
        accepted_silently: tuple[str, ...] = (ANONYMOUS,),
        max_frame_bytes: int = MAX_SASL_FRAME_BYTES,
    ) -> None:
        self._advertised = mechanisms
        self._interactive = frozenset(interactive_mechanisms)
        # Mechanisms taken though not advertised: ANONYMOUS-with-client-certificate clients
        # (protocol.md §4.1) are identified by their TLS chain, exactly as without SASL.
        self._accepted = frozenset((*mechanisms, *accepted_silently))
        self._max_frame = max_frame_bytes
        self._buffer = bytearray()
        self._outbound = bytearray()
        self._header_seen = False
        self._frames = 0
        self._mechanism: str | None = None
        self.done = False
        self.remainder = b""

    def receive_data(self, data: bytes) -> list[SaslEvent]:
        if self.done:
            self.remainder += data
            return []
        self._buffer += data
        events: list[SaslEvent] = []
        if not self._header_seen:
            if len(self._buffer) < HEADER_SIZE:
                return events
            if bytes(self._buffer[:HEADER_SIZE]) != SASL_HEADER:
                return [self._fail("not a SASL protocol header", send_outcome=False)]
            del self._buffer[:HEADER_SIZE]
            self._header_seen = True
            self._outbound += SASL_HEADER + encode_frame(
                SASL_MECHANISMS, [Symbols(self._advertised)]
            )
        while not self.done:
            frame = self._next_frame()
            if isinstance(frame, SaslFailed):
                return [*events, frame]
            if frame is None:
                break
            events.extend(self._handle(*frame))
        return events

    def data_to_send(self) -> bytes:
        out = bytes(self._outbound)
        self._outbound.clear()
        return out

    # -- commands for interactive mechanisms --------------------------------------------------

    def challenge(self, data: bytes) -> None:
        self._outbound += encode_frame(SASL_CHALLENGE, [data])

    def succeed(self, identity: SaslIdentity) -> SaslSucceeded:
        self._outbound += encode_frame(SASL_OUTCOME, [UByte(SaslCode.OK)])
        self._finish()
        return SaslSucceeded(identity)

    def fail(self, reason: str, code: SaslCode = SaslCode.AUTH) -> SaslFailed:
        """Refuse with sasl-outcome `code`: AUTH for bad credentials, SYS_TEMP for "try again
        later" (throttling, an unavailable store), SYS for our own failures."""
        return self._fail(reason, code=code)

    # -- internals ---------------------------------------------------------------------------

    def _next_frame(self) -> tuple[int, list[object]] | SaslFailed | None:
        if len(self._buffer) < FRAME_HEADER.size:
            return None
        if self._mechanism in self._interactive and self._buffer.startswith(AMQP_HEADER[:4]):
            # The client's AMQP header, pipelined after its last response before our outcome
            # (no SASL frame starts so: it would claim ~1 GiB). Keep it for `remainder`.
            return None
        size, doff, frame_type, _channel = FRAME_HEADER.unpack_from(self._buffer)
        if frame_type != SASL_FRAME_TYPE or doff < 2 or size < doff * 4:
            return self._fail("malformed SASL frame header")
        if size > self._max_frame:
            return self._fail(f"SASL frame of {size} bytes exceeds {self._max_frame}")
        if len(self._buffer) < size:
            return None
        body = bytes(self._buffer[doff * 4 : size])
        del self._buffer[:size]
        self._frames += 1
        if self._frames > MAX_SASL_FRAMES:
            return self._fail("too many SASL frames")
        decoded = decode_frame_body(body)
        if decoded is None:
            return self._fail("undecodable SASL frame")
        return decoded

    def _handle(self, descriptor: int, fields: list[object]) -> list[SaslEvent]:
        if descriptor == SASL_INIT and self._mechanism is None:
            return [self._on_init(fields)]
        if descriptor == SASL_RESPONSE and self._mechanism in self._interactive:
            response = _field(fields, 0)
            return [SaslResponseReceived(_as_bytes(response))]
        return [self._fail(f"unexpected SASL frame {descriptor:#x}")]

    def _on_init(self, fields: list[object]) -> SaslEvent:
        mechanism = str(_field(fields, 0) or "")
        response = _as_bytes(_field(fields, 1))
        hostname = _field(fields, 2)
        self._mechanism = mechanism
        if mechanism in self._interactive:
            return SaslInitReceived(
                mechanism, response, hostname if isinstance(hostname, str) else None
            )
        if mechanism not in self._accepted:
            return self._fail(f"mechanism {mechanism!r} is not supported")
        if mechanism == PLAIN:
            identity = parse_plain(response)
            if identity is None:
                return self._fail("malformed PLAIN response")
            return self.succeed(identity)
        return self.succeed(SaslIdentity(mechanism))

    def _fail(
        self, reason: str, *, send_outcome: bool = True, code: SaslCode = SaslCode.AUTH
    ) -> SaslFailed:
        if send_outcome and self._header_seen:
            self._outbound += encode_frame(SASL_OUTCOME, [UByte(code)])
        elif not self._header_seen:
            # AMQP 1.0 §2.2: answer an unsupported header with the one we speak, then close.
            self._outbound += SASL_HEADER
        self._finish()
        return SaslFailed(reason)

    def _finish(self) -> None:
        self.done = True
        self.remainder = bytes(self._buffer)
        self._buffer.clear()


def parse_plain(response: bytes) -> SaslIdentity | None:
    """RFC 4616: `[authzid] NUL authcid NUL passwd`, UTF-8; None if malformed."""
    parts = response.split(b"\x00")
    if len(parts) != 3 or not parts[1]:
        return None
    try:
        username, password = parts[1].decode("utf-8"), parts[2].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return SaslIdentity(PLAIN, username, password)


# -- codec --------------------------------------------------------------------------------------


# Field types of encode_frame beyond binary (bytes) and string (str). Public: the simulator's
# client side of the TPM mechanism writes its frames with the same codec.
class UByte(int):
    """An AMQP ubyte (sasl-outcome's code)."""


class Symbol(str):
    """An AMQP symbol (sasl-init's mechanism)."""


class Symbols(tuple[str, ...]):
    """An array of symbols (sasl-mechanisms)."""


def encode_frame(descriptor: int, fields: list[object]) -> bytes:
    """A SASL frame: 8-byte header (doff 2, type 1), then the described list."""
    data = Data()
    data.put_described()
    data.enter()
    data.put_ulong(descriptor)
    data.put_list()
    data.enter()
    for value in fields:
        if isinstance(value, Symbols):
            data.put_array(False, Data.SYMBOL)
            data.enter()
            for name in value:
                data.put_symbol(name)
            data.exit()
        elif isinstance(value, UByte):
            data.put_ubyte(int(value))
        elif isinstance(value, Symbol):
            data.put_symbol(str(value))
        elif isinstance(value, str):
            data.put_string(value)
        elif isinstance(value, bytes):
            data.put_binary(value)
        else:
            raise TypeError(f"unsupported SASL field {value!r}")
    data.exit()
    data.exit()
    body = bytes(data.encode())
    return FRAME_HEADER.pack(FRAME_HEADER.size + len(body), 2, SASL_FRAME_TYPE, 0) + body


def decode_frame_body(body: bytes) -> tuple[int, list[object]] | None:
    """A frame body → (descriptor, fields); None for anything that is not a described list."""
    data = Data()
    try:
        data.decode(body)
        data.next()
        value = data.get_object()
    except (DataException, KeyError, ValueError, TypeError, UnicodeDecodeError):
        return None
    if not isinstance(value, Described) or not isinstance(value.value, list):
        return None
    descriptor = value.descriptor
    if isinstance(descriptor, bool) or not isinstance(descriptor, int):
        return None
    # Binary values are views into the decoder's buffer: copy them while it is alive.
    fields: list[object] = [bytes(v) if isinstance(v, memoryview) else v for v in value.value]
    return int(descriptor), fields


def _field(fields: list[object], index: int) -> object:
    return fields[index] if index < len(fields) else None


def _as_bytes(value: object) -> bytes:
    """A binary field's value; absent or mistyped fields read as empty."""
    return bytes(value) if isinstance(value, bytes | bytearray | memoryview) else b""
