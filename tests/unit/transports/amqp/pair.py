"""A proton *client* pumped against our server driver in memory (STYLE §3.4 habit 3).

The client is proton's own engine with its built-in SASL client (PLAIN works there), so the
server is tested against an independent AMQP implementation, not against itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proton import (
    Collector,
    Connection,
    Delivery,
    Endpoint,
    Event,
    Message,
    Receiver,
    Sender,
    Transport,
)

from opendps.transports.amqp.driver import AmqpServerConnection, DriverEvent

ADDRESS = "0ne00000001/registrations/dev-1"


@dataclass
class ProtonClient:
    user: str | None = None
    password: str | None = None
    connection: Connection = field(default_factory=Connection)
    transport: Transport = field(default_factory=Transport)
    collector: Collector = field(default_factory=Collector)
    received: list[Message] = field(default_factory=list)
    outcomes: dict[str, tuple[int, Any]] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.user is not None:
            sasl = self.transport.sasl()
            sasl.allow_insecure_mechs = True
            sasl.allowed_mechs("PLAIN")
            self.connection.user = self.user
            if self.password is not None:
                self.connection.password = self.password
        self.connection.collect(self.collector)
        self.transport.bind(self.connection)
        self.connection.container = "device"
        self.connection.hostname = "localhost"

    def open_links(self, address: str = ADDRESS) -> tuple[Sender, Receiver]:
        self.connection.open()
        session = self.connection.session()
        session.open()
        receiver = session.receiver("rx")
        receiver.source.address = address
        receiver.open()
        receiver.flow(10)
        sender = session.sender("tx")
        sender.target.address = address
        sender.open()
        return sender, receiver

    def send(self, sender: Sender, message: Message, tag: str) -> None:
        sender.delivery(tag)
        sender.send(message.encode())
        sender.advance()

    def drain(self) -> bytes:
        out = bytearray()
        while (pending := self.transport.pending()) > 0:
            chunk = self.transport.peek(pending) or b""
            self.transport.pop(len(chunk))
            out += chunk
        return bytes(out)

    def feed(self, data: bytes) -> None:
        if data and self.transport.capacity() > 0:
            self.transport.push(data)
        while (event := self.collector.peek()) is not None:
            self._on_event(event)
            self.collector.pop()

    def _on_event(self, event: Event) -> None:
        self.events.append(str(event.type))
        delivery = event.delivery
        if event.type == Event.DELIVERY and delivery is not None:
            link = delivery.link
            if isinstance(link, Receiver) and delivery.readable and not delivery.partial:
                message = Message()
                message.decode(link.recv(delivery.pending) or b"")
                link.advance()
                self.received.append(message)
                delivery.update(Delivery.ACCEPTED)
                delivery.settle()
            elif isinstance(link, Sender) and delivery.updated:
                condition = delivery.remote.condition
                self.outcomes[delivery.tag] = (delivery.remote_state, condition)
                delivery.settle()

    @property
    def closed_by_server(self) -> bool:
        return bool(self.connection.state & Endpoint.REMOTE_CLOSED)


def pump(client: ProtonClient, server: AmqpServerConnection, rounds: int = 20) -> list[DriverEvent]:
    """Move bytes both ways until neither side has anything to say; return the server events."""
    events: list[DriverEvent] = []
    for _ in range(rounds):
        to_server = client.drain()
        if to_server:
            events += server.receive_data(to_server)
        to_client = server.data_to_send()
        client.feed(to_client)
        if not to_server and not to_client:
            break
    return events
