"""The AMQP 1.0 server connection, sans-I/O: feed bytes → events → bytes to send.

proton's *engine* (`Connection`, `Transport`, `Collector`) does the AMQP framing and the
connection/session/link state machines; its reactor, sockets and SSL are not used, so the TLS
front door (and the client chain it keeps) stays ours. In front of proton sits our SASL layer
(sasl.py explains why); the first 8 bytes choose the path (protocol.md §4.1):

- `AMQP\\x03\\x01\\x00\\x00`: SASL (PLAIN with the SAS token as password, EXTERNAL, or the
  DPS `TPM` mechanism of tpm_sasl.py), then the plain AMQP header and the connection, handed
  to proton;
- `AMQP\\x00\\x01\\x00\\x00`: no SASL at all (X.509 devices: the TLS chain is the credential).

The driver answers OPEN/BEGIN/ATTACH and DETACH/END/CLOSE itself (Node waits for each answer,
clients.md §3), grants credit on the client's sender link, and turns each complete message into
a `RequestReceived`. The caller (adapter.py) answers it with `reply()` or `reject()`.
It contains no DPS rule: which operation a message asks for is read here, what it means is the
engine's business.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast

from proton import (
    Collector,
    Condition,
    Connection,
    Delivery,
    Endpoint,
    Event,
    Link,
    Message,
    MessageException,
    Receiver,
    Sender,
    Session,
    Terminus,
    Transport,
    TransportException,
)

from opendps.transports.amqp.sasl import (
    AMQP_HEADER,
    EXTERNAL,
    HEADER_SIZE,
    PLAIN,
    SASL_HEADER,
    SaslCode,
    SaslEvent,
    SaslFailed,
    SaslIdentity,
    SaslInitReceived,
    SaslResponseReceived,
    SaslServer,
    SaslSucceeded,
)
from opendps.transports.amqp.tpm_sasl import (
    TPM,
    KeyNeeded,
    Refuse,
    SendChallenge,
    TokenPresented,
    TpmKeys,
    TpmSaslExchange,
    TpmStep,
)

# Largest AMQP frame we accept (advertised in OPEN; proton refuses larger ones with a framing
# error). A DPS request is a DeviceRegistration of at most 96 KB (Azure's message size,
# protocol.md §9) and clients split messages across frames, so 64 KiB frames (the C SDK's own
# receive cap, AMQP_MAX_RECV_MSG_SIZE) keep per-frame buffers small without slowing anyone.
MAX_FRAME_BYTES = 64 * 1024
# Largest message (all frames of one delivery): Azure's 96 KB message limit (protocol.md §9).
MAX_MESSAGE_BYTES = 96 * 1024
# Advertised idle timeout: a client that sends nothing (not even an empty heartbeat frame, which
# peers send at half the advertised value) for this long is gone; proton then closes with
# `amqp:resource-limit-exceeded`. A registration takes seconds and a poll interval is 1-2 s.
IDLE_TIMEOUT_SECONDS = 60.0
# From the end of the TLS handshake to the client's OPEN (SASL included): a device does this in
# two round trips; as for the TLS handshake (tls/server.py), 10 s drops silent clients.
OPEN_TIMEOUT_SECONDS = 10.0
# Credit granted on each client sender link, i.e. requests a client may have outstanding. DPS
# clients have one request in flight; a little headroom, and a bound on concurrent engine calls.
LINK_CREDIT = 10
# Sessions and links per connection: a DPS client uses one session and two links.
MAX_LINKS = 16
# Channels (sessions) a client may open; advertised in OPEN.
MAX_CHANNELS = 8
# sasl-mechanisms (protocol.md §4.1). uAMQP (C) fails unless its mechanism is listed; each DPS
# client supports exactly one of these, so the order only keeps PLAIN first for generic clients.
SASL_MECHANISMS = (PLAIN, EXTERNAL, TPM)

# AMQP error conditions (AMQP 1.0 §2.8.15) used here.
RESOURCE_LIMIT = "amqp:resource-limit-exceeded"
MESSAGE_SIZE_EXCEEDED = "amqp:link:message-size-exceeded"
INVALID_FIELD = "amqp:invalid-field"
NOT_FOUND = "amqp:not-found"
DECODE_ERROR = "amqp:decode-error"

# Application properties (protocol.md §4.3).
OPERATION_TYPE = "iotdps-operation-type"
OPERATION_ID = "iotdps-operation-id"
FORCE_REGISTRATION = "iotdps-forceRegistration"


@dataclass(frozen=True, slots=True)
class AmqpLimits:
    max_frame_bytes: int = MAX_FRAME_BYTES
    max_message_bytes: int = MAX_MESSAGE_BYTES
    idle_timeout_seconds: float = IDLE_TIMEOUT_SECONDS
    open_timeout_seconds: float = OPEN_TIMEOUT_SECONDS

    def __post_init__(self) -> None:
        if self.max_frame_bytes < 512 or self.max_message_bytes < 1:
            raise ValueError("max_frame_bytes must be >= 512 (AMQP minimum), messages >= 1")
        if self.idle_timeout_seconds <= 0 or self.open_timeout_seconds <= 0:
            raise ValueError("timeouts must be positive")


DEFAULT_AMQP_LIMITS = AmqpLimits()


@dataclass(frozen=True, slots=True)
class RegistrationAddress:
    """A link address `{idScope}/registrations/{registrationId}` (protocol.md §4.2)."""

    id_scope: str
    registration_id: str


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A complete message on a client sender link. Answer with `reply()` or `reject()`."""

    request_id: int
    address: RegistrationAddress
    operation_type: str | None
    operation_id: str | None
    correlation_id: Any
    # A data section arrives as bytes, an amqp-value as whatever it holds (Node polls with "").
    body: Any
    force_registration: bool = False


@dataclass(frozen=True, slots=True)
class Authenticated:
    """SASL finished (or was skipped: `identity` None, the X.509 path)."""

    identity: SaslIdentity | None


@dataclass(frozen=True, slots=True)
class ConnectionFailed:
    """A protocol error or limit closed the connection; `reason` is safe to log."""

    reason: str


@dataclass(frozen=True, slots=True)
class TpmKeyRequested:
    """TPM SASL (protocol.md §4.4 step 3): get the `authenticationKey` blob for these keys from
    the engine, then call `tpm_authentication_key()` (or `sasl_fail()`)."""

    keys: TpmKeys


@dataclass(frozen=True, slots=True)
class TpmTokenPresented:
    """TPM SASL step 5: have the engine check the token, then call `tpm_accept()` (or
    `sasl_fail()`). The token is a credential: never log it."""

    id_scope: str
    registration_id: str
    token: str

    def __repr__(self) -> str:
        return (
            f"TpmTokenPresented(id_scope={self.id_scope!r}, "
            f"registration_id={self.registration_id!r})"
        )


DriverEvent = (
    RequestReceived
    | Authenticated
    | ConnectionFailed
    | TpmKeyRequested
    | TpmTokenPresented
    | SaslInitReceived
    | SaslResponseReceived
)


def parse_address(address: str | None) -> RegistrationAddress | None:
    """`{idScope}/registrations/{registrationId}`, also behind an `amqps://host/` prefix (C)."""
    if not address:
        return None
    if "://" in address:
        rest = address.split("://", 1)[1]
        if "/" not in rest:
            return None
        address = rest.split("/", 1)[1]
    parts = address.split("/")
    if len(parts) != 3 or parts[1].lower() != "registrations" or not parts[0] or not parts[2]:
        return None
    return RegistrationAddress(parts[0], parts[2])


@dataclass(slots=True)
class _Pending:
    delivery: Delivery
    receiver: Receiver
    address: RegistrationAddress
    correlation_id: Any


@dataclass(slots=True)
class _Outgoing:
    address: RegistrationAddress
    session: Session
    payload: bytes = field(repr=False)


class AmqpServerConnection:
    """One client connection. Drive it with `receive_data`, `data_to_send` and `tick`."""

    def __init__(
        self,
        limits: AmqpLimits = DEFAULT_AMQP_LIMITS,
        *,
        container_id: str = "opendps",
        sasl: SaslServer | None = None,
    ) -> None:
        self.limits = limits
        self._sasl = sasl or SaslServer(SASL_MECHANISMS, interactive_mechanisms=(TPM,))
        self._tpm: TpmSaslExchange | None = None
        self._container_id = container_id
        self._header = bytearray()
        self._mode: str | None = None  # "sasl" | "amqp" | "closed"
        self._connection = Connection()
        self._transport = Transport(Transport.SERVER)
        self._transport.max_frame_size = limits.max_frame_bytes
        self._transport.channel_max = MAX_CHANNELS - 1
        self._transport.idle_timeout = limits.idle_timeout_seconds
        self._collector = Collector()
        self._connection.collect(self._collector)
        self._transport.bind(self._connection)
        self._outbound = bytearray()
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._waiting: deque[_Outgoing] = deque()
        self._links = 0
        self._ended = False
        self.opened = False
        self.identity: SaslIdentity | None = None

    # -- the three verbs ---------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[DriverEvent]:
        """Feed bytes from the client; returns what happened (never raises on bad input)."""
        if self._mode == "closed" or self._ended:
            return []
        if self._mode is None:
            return self._sniff(data)
        if self._mode == "sasl":
            return self._feed_sasl(data)
        return self._feed_proton(data)

    def data_to_send(self) -> bytes:
        """Bytes to write to the client (SASL frames first, then proton's output)."""
        out = bytearray(self._outbound)
        self._outbound.clear()
        if self._mode == "sasl":
            out += self._sasl.data_to_send()
        elif self._mode == "amqp":
            out += self._drain_proton()
        return bytes(out)

    def tick(self, now: float) -> tuple[list[DriverEvent], float]:
        """Let proton check idle timeouts and send heartbeats at time `now` (seconds, monotonic).

        Returns events and the time of the next deadline (0: none)."""
        if self._mode != "amqp" or self._ended:
            return [], 0.0
        deadline = self._transport.tick(now)
        return self._process_events(), deadline

    # -- commands -----------------------------------------------------------------------------

    def reply(self, request_id: int, body: bytes, properties: dict[str, Any]) -> None:
        """Answer a request: accept it and send `body` as a data section on the client's
        receiver link for the same address, with the request's correlation-id (§4.3)."""
        pending = self._pending.pop(request_id, None)
        if pending is None:
            return  # the link or connection is gone
        message = Message(body=body, inferred=True, properties=properties)
        message.correlation_id = pending.correlation_id
        outgoing = _Outgoing(pending.address, pending.receiver.session, bytes(message.encode()))
        self._settle(pending, Delivery.ACCEPTED)
        self._waiting.append(outgoing)
        self._send_waiting()

    def reject(
        self, request_id: int, condition: str, description: str, info: dict[str, Any] | None
    ) -> None:
        """Settle a request `Rejected` with an AMQP error (how DPS reports failures, §4.3)."""
        pending = self._pending.pop(request_id, None)
        if pending is None:
            return
        pending.delivery.local.condition = Condition(condition, description, cast(Any, info))
        self._settle(pending, Delivery.REJECTED)

    def close(self, condition: str | None = None, description: str | None = None) -> None:
        """Close the connection (with an error condition when given)."""
        if self._mode != "amqp":
            self._mode = "closed"
            self._ended = True
            return
        if condition is not None:
            self._connection.condition = Condition(condition, description)
        if not self._connection.state & Endpoint.LOCAL_CLOSED:
            self._connection.close()

    def sasl_challenge(self, data: bytes) -> None:
        """For interactive SASL mechanisms other than TPM (which this class speaks itself)."""
        if self._mode == "sasl":
            self._sasl.challenge(data)

    def sasl_succeed(self, identity: SaslIdentity) -> list[DriverEvent]:
        if self._mode != "sasl":
            return []  # already failed (or closed) meanwhile
        return self._after_sasl([self._sasl.succeed(identity)])

    def sasl_fail(self, reason: str, code: SaslCode = SaslCode.AUTH) -> list[DriverEvent]:
        """End SASL with outcome `code` and close (reason: safe to log, not sent)."""
        if self._mode != "sasl":
            return []
        return self._after_sasl([self._sasl.fail(reason, code)])

    def tpm_authentication_key(self, blob: bytes) -> list[DriverEvent]:
        """The engine's answer to `TpmKeyRequested`: sent in chunks, one per client ACK."""
        if self._mode != "sasl" or self._tpm is None:
            return []
        try:
            step = self._tpm.key_ready(blob)
        except ValueError as error:  # a blob the protocol cannot carry: our bug, not theirs
            return self.sasl_fail(f"TPM: {error}", SaslCode.SYS)
        return self._tpm_step(step)

    def tpm_accept(self) -> list[DriverEvent]:
        """The engine accepted the token of `TpmTokenPresented`: SASL succeeds, and requests
        on this connection present that token as their SAS credential."""
        if self._mode != "sasl" or self._tpm is None:
            return []
        try:
            identity = self._tpm.accepted()
        except ValueError as error:  # called out of turn: never let that become a success
            return self.sasl_fail(f"TPM: {error}", SaslCode.SYS)
        return self.sasl_succeed(identity)

    @property
    def ended(self) -> bool:
        """True once everything there is to send was returned by `data_to_send()`: write it,
        then close the socket. (After CLOSE was exchanged, or a SASL or protocol failure.)"""
        if self._mode == "amqp":
            return self._transport.pending() < 0
        return self._ended and not self._outbound

    # -- header and SASL ----------------------------------------------------------------------

    def _sniff(self, data: bytes) -> list[DriverEvent]:
        self._header += data
        if len(self._header) < HEADER_SIZE:
            if SASL_HEADER.startswith(self._header) or AMQP_HEADER.startswith(self._header):
                return []
            return self._refuse_header()
        buffered, self._header = bytes(self._header), bytearray()
        if buffered.startswith(SASL_HEADER):
            self._mode = "sasl"
            return self._feed_sasl(buffered)
        if buffered.startswith(AMQP_HEADER):
            self._mode = "amqp"
            return [Authenticated(None), *self._feed_proton(buffered)]
        return self._refuse_header()

    def _refuse_header(self) -> list[DriverEvent]:
        # AMQP 1.0 §2.2: answer an unsupported protocol header with ours, then close.
        self._outbound += SASL_HEADER
        self._mode = "closed"
        self._ended = True
        return [ConnectionFailed("unsupported protocol header")]

    def _feed_sasl(self, data: bytes) -> list[DriverEvent]:
        return self._after_sasl(self._sasl.receive_data(data))

    def _after_sasl(self, sasl_events: list[SaslEvent]) -> list[DriverEvent]:
        events: list[DriverEvent] = []
        for event in sasl_events:
            if isinstance(event, SaslFailed):
                self._outbound += self._sasl.data_to_send()
                self._mode = "closed"
                self._ended = True
                return [*events, ConnectionFailed(f"SASL: {event.reason}")]
            if isinstance(event, SaslSucceeded):
                self.identity = event.identity
                self._outbound += self._sasl.data_to_send()
                self._mode = "amqp"
                events.append(Authenticated(event.identity))
                if self._sasl.remainder:
                    events.extend(self._feed_proton(self._sasl.remainder))
                return events
            if isinstance(event, SaslInitReceived) and event.mechanism == TPM:
                self._tpm = TpmSaslExchange()
                events.extend(self._tpm_step(self._tpm.on_init(event.initial_response)))
            elif isinstance(event, SaslResponseReceived) and self._tpm is not None:
                events.extend(self._tpm_step(self._tpm.on_response(event.response)))
            else:
                events.append(event)
            if self._mode != "sasl":
                return events  # the TPM exchange refused: SASL failed and the rest is moot
        return events

    def _tpm_step(self, step: TpmStep) -> list[DriverEvent]:
        if isinstance(step, SendChallenge):
            self._sasl.challenge(step.data)
            return []
        if isinstance(step, KeyNeeded):
            return [TpmKeyRequested(step.keys)]
        if isinstance(step, TokenPresented):
            return [TpmTokenPresented(step.id_scope, step.registration_id, step.token)]
        assert isinstance(step, Refuse)
        return self.sasl_fail(f"TPM: {step.reason}")

    # -- proton ------------------------------------------------------------------------------

    def _feed_proton(self, data: bytes) -> list[DriverEvent]:
        view = memoryview(data)
        while view:
            capacity = self._transport.capacity()
            if capacity <= 0:
                break  # input side closed (after an error or CLOSE): the rest is dropped
            chunk = view[:capacity]
            try:
                self._transport.push(bytes(chunk))
            except TransportException:
                break  # the condition is on the transport; TRANSPORT_ERROR reports it
            view = view[len(chunk) :]
        return self._process_events()

    def _drain_proton(self) -> bytes:
        out = bytearray()
        while True:
            pending = self._transport.pending()
            if pending <= 0:
                break
            chunk = self._transport.peek(pending) or b""
            self._transport.pop(len(chunk))
            out += chunk
        return bytes(out)

    def _process_events(self) -> list[DriverEvent]:
        events: list[DriverEvent] = []
        while (event := self._collector.peek()) is not None:
            try:
                events.extend(self._on_event(event))
            finally:
                self._collector.pop()
        return events

    def _on_event(self, event: Event) -> list[DriverEvent]:
        kind = event.type
        if kind == Event.CONNECTION_REMOTE_OPEN:
            self._on_open()
        elif kind == Event.SESSION_REMOTE_OPEN:
            assert event.session is not None
            event.session.open()
        elif kind == Event.LINK_REMOTE_OPEN:
            assert event.link is not None
            return self._on_attach(event.link)
        elif kind == Event.LINK_FLOW:
            self._send_waiting()
        elif kind == Event.DELIVERY:
            assert event.delivery is not None
            return self._on_delivery(event.delivery)
        elif kind == Event.LINK_REMOTE_CLOSE:
            assert event.link is not None
            self._on_detach(event.link)
        elif kind == Event.SESSION_REMOTE_CLOSE:
            assert event.session is not None
            event.session.close()
        elif kind == Event.CONNECTION_REMOTE_CLOSE:
            self._connection.close()
        elif kind == Event.TRANSPORT_ERROR:
            condition = self._transport.condition
            reason = condition.description if condition else "transport error"
            return [ConnectionFailed(f"AMQP: {reason}")]
        return []

    def _on_open(self) -> None:
        self.opened = True
        self._connection.container = self._container_id
        self._connection.open()

    def _on_attach(self, link: Link) -> list[DriverEvent]:
        self._links += 1
        remote = link.remote_target if link.is_receiver else link.remote_source
        address = parse_address(remote.address)
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        if self._links > MAX_LINKS:
            self._refuse_link(link, RESOURCE_LIMIT, f"more than {MAX_LINKS} links")
            return []
        if address is None:
            self._refuse_link(
                link, NOT_FOUND, "link address must be {idScope}/registrations/{registrationId}"
            )
            return []
        link._opendps_address = address  # proton keeps wrapper attributes on the C object
        if isinstance(link, Receiver):
            link.max_message_size = self.limits.max_message_bytes
            link.open()
            link.flow(LINK_CREDIT)
        else:
            link.open()
        return []

    def _refuse_link(self, link: Link, condition: str, description: str) -> None:
        # AMQP 1.0 §2.6.3: refuse by attaching (with no terminus) and detaching at once.
        if link.is_receiver:
            link.target.type = Terminus.UNSPECIFIED
        else:
            link.source.type = Terminus.UNSPECIFIED
        link.open()
        link.condition = Condition(condition, description)
        link.close()

    def _on_detach(self, link: Link) -> None:
        for request_id, pending in list(self._pending.items()):
            if pending.receiver == link:
                del self._pending[request_id]
        if not link.state & Endpoint.LOCAL_CLOSED:
            link.close()

    def _on_delivery(self, delivery: Delivery) -> list[DriverEvent]:
        link = delivery.link
        if isinstance(link, Sender):
            if delivery.updated:  # the client settled a reply
                delivery.settle()
            return []
        assert isinstance(link, Receiver)
        if delivery.pending > self.limits.max_message_bytes:
            self.close(
                MESSAGE_SIZE_EXCEEDED,
                f"messages are limited to {self.limits.max_message_bytes} bytes",
            )
            return [ConnectionFailed("message too large")]
        if not delivery.readable or delivery.partial:
            return []
        payload = link.recv(delivery.pending) or b""
        link.advance()
        address: RegistrationAddress | None = getattr(link, "_opendps_address", None)
        if address is None or delivery.aborted:
            delivery.settle()
            return []
        return [self._request(delivery, link, address, payload)]

    def _request(
        self, delivery: Delivery, link: Receiver, address: RegistrationAddress, payload: bytes
    ) -> DriverEvent:
        message = Message()
        try:
            message.decode(payload)
        except (MessageException, KeyError, ValueError, TypeError, UnicodeDecodeError):
            self.close(DECODE_ERROR, "the message cannot be decoded")
            return ConnectionFailed("undecodable message")
        props: dict[Any, Any] = message.properties if isinstance(message.properties, dict) else {}
        request_id = next(self._ids)
        self._pending[request_id] = _Pending(delivery, link, address, message.correlation_id)
        body = message.body
        return RequestReceived(
            request_id=request_id,
            address=address,
            operation_type=_str_or_none(props.get(OPERATION_TYPE)),
            operation_id=_str_or_none(props.get(OPERATION_ID)),
            correlation_id=message.correlation_id,
            body=bytes(body) if isinstance(body, memoryview | bytearray) else body,
            force_registration=props.get(FORCE_REGISTRATION) is True,
        )

    def _settle(self, pending: _Pending, outcome: int) -> None:
        delivery, receiver = pending.delivery, pending.receiver
        if delivery.settled or receiver.state & Endpoint.LOCAL_CLOSED:
            return
        delivery.update(outcome)
        delivery.settle()
        if receiver.credit < LINK_CREDIT and not receiver.state & Endpoint.REMOTE_CLOSED:
            receiver.flow(LINK_CREDIT - receiver.credit)  # keep the window full

    def _send_waiting(self) -> None:
        """Send queued replies that now have a link with credit; keep the others waiting."""
        still_waiting: deque[_Outgoing] = deque()
        while self._waiting:
            outgoing = self._waiting.popleft()
            sender = self._reply_link(outgoing)
            if sender is None or sender.credit <= 0:
                still_waiting.append(outgoing)
                continue
            sender.delivery(str(next(self._ids)))
            sender.send(outgoing.payload)
            sender.advance()
        self._waiting = still_waiting

    def _reply_link(self, outgoing: _Outgoing) -> Sender | None:
        link = self._connection.link_head(Endpoint.LOCAL_ACTIVE | Endpoint.REMOTE_ACTIVE)
        while link is not None:
            if (
                isinstance(link, Sender)
                and link.session == outgoing.session
                and getattr(link, "_opendps_address", None) == outgoing.address
            ):
                return link
            link = link.next(Endpoint.LOCAL_ACTIVE | Endpoint.REMOTE_ACTIVE)
        return None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
