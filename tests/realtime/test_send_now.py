"""`send_now` (realtime/frames.py): an update's frame goes to a connection's socket at once when
nothing waits before it, and through Twisted's buffer otherwise, so the order of a connection's
frames and the slow-reader pause are what Twisted's own write gives. In-process, on a real socket
pair and Twisted's real TCP transport (the live tests drive it through Daphne)."""

from __future__ import annotations

import socket

import pytest
from twisted.internet import reactor, tcp

from realtime.frames import send_now


class _Protocol:
    def makeConnection(self, transport):  # noqa: N802 - Twisted's interface
        self.transport = transport


@pytest.fixture
def pair():
    server, client = socket.socketpair()
    server.setblocking(False)
    transport = tcp.Connection(server, _Protocol(), reactor)
    transport.connected = True
    yield transport, client
    transport.stopWriting()
    server.close()
    client.close()


def read_all(client: socket.socket) -> bytes:
    client.setblocking(False)
    chunks = []
    try:
        while True:
            chunk = client.recv(1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks)


def test_a_frame_for_an_idle_connection_is_on_the_socket_before_the_reactor_runs(pair):
    transport, client = pair
    send_now(transport, b"first")
    send_now(transport, b"second")
    # nothing left for the reactor: no buffer, no writer registered
    assert read_all(client) == b"firstsecond"
    assert not transport._tempDataBuffer and not transport.dataBuffer
    assert transport not in reactor.getWriters()


def test_a_frame_waits_behind_what_twisted_already_holds(pair):
    transport, client = pair
    # given a frame Twisted buffered (written its own way, e.g. a pong or a close)
    transport.write(b"buffered")
    send_now(transport, b"then-this")
    # then nothing jumped the queue: both wait for the reactor, in order
    assert read_all(client) == b""
    assert b"".join(transport._tempDataBuffer) == b"bufferedthen-this"


def test_what_the_kernel_does_not_take_goes_to_twisteds_buffer_and_pauses_the_producer(pair):
    transport, client = pair

    class Producer:
        paused = False

        def pauseProducing(self):  # noqa: N802
            self.paused = True

        def resumeProducing(self):  # noqa: N802
            self.paused = False

        def stopProducing(self):  # noqa: N802
            pass

    producer = Producer()
    transport.registerProducer(producer, True)
    # when a client that does not read is sent more than the kernel's buffers hold
    frame = b"x" * 65536
    for _ in range(64):
        send_now(transport, frame)
    # then the rest is Twisted's, in order after what went out, and the producer was paused (the
    # consumer's slow-reader guard: 4008 past its budget)
    held = transport._tempDataLen + len(transport.dataBuffer)
    assert held > 0 and producer.paused
    received = read_all(client)
    assert len(received) + held == 64 * len(frame)


def test_a_closing_or_closed_connection_takes_twisteds_way(pair):
    transport, client = pair
    transport.disconnecting = True
    send_now(transport, b"late")
    assert read_all(client) == b"" and b"".join(transport._tempDataBuffer) == b"late"


# --- a message's frames in one write (FrameWriter.cork / uncork, the hub's deliver_all) -------------


class _Daphneish:
    """What FrameWriter drives under Daphne: an autobahn-like protocol over a real Twisted transport."""

    STATE_OPEN, STATE_CLOSING = 3, 4

    def __init__(self, transport):
        from autobahn.websocket.protocol import WebSocketServerFactory

        self.transport, self.state = transport, self.STATE_OPEN
        self.factory = WebSocketServerFactory()
        self._perMessageCompress, self.send_queue = None, []
        self.sent_messages: list[bytes] = []

    def sendMessage(self, data):  # noqa: N802 - autobahn's interface
        self.sent_messages.append(data)
        self.transport.write(self.factory.prepareMessage(data).payloadHybi)


def writer_on(transport):
    from realtime.frames import FrameWriter

    writer = FrameWriter(lambda message: None)
    writer.protocol = _Daphneish(transport)
    return writer


def test_corked_frames_leave_in_one_write_in_order(pair, monkeypatch):
    from realtime import frames
    from realtime.frames import Outgoing

    transport, client = pair
    writes = []
    monkeypatch.setattr(frames, "send_now", lambda t, data: writes.append(data) or send_now(t, data))
    writer = writer_on(transport)
    events = [Outgoing(seq, f'{{"seq":{seq}}}') for seq in (7, 8, 9)]

    writer.cork()
    for event in events:
        writer.write(event)
    assert writes == [] and read_all(client) == b""
    writer.uncork()

    # one write, the three frames in seq order, each a whole WebSocket text frame
    assert len(writes) == 1
    assert read_all(client) == b"".join(e.prepared(writer.protocol.factory).payloadHybi for e in events)


def test_a_frame_that_cannot_be_corked_sends_what_was_held_first(pair):
    from realtime.frames import Outgoing

    transport, client = pair
    writer = writer_on(transport)
    factory = writer.protocol.factory
    writer.cork()
    writer.write(Outgoing(1, '{"seq":1}'))
    writer.write('{"type":"resync_required"}')  # a text frame of the connection's own
    writer.write(Outgoing(2, '{"seq":2}'))
    writer.uncork()
    transport.doWrite()  # what Twisted buffered
    expected = (Outgoing(1, '{"seq":1}').prepared(factory).payloadHybi
                + factory.prepareMessage(b'{"type":"resync_required"}').payloadHybi
                + Outgoing(2, '{"seq":2}').prepared(factory).payloadHybi)
    assert read_all(client) == expected


def test_a_connection_closed_while_corked_gets_nothing_more(pair):
    from realtime.frames import Outgoing

    transport, client = pair
    writer = writer_on(transport)
    writer.cork()
    writer.write(Outgoing(1, '{"seq":1}'))
    writer.protocol.state = writer.protocol.STATE_CLOSING  # e.g. closed 4008 past its budget
    writer.uncork()
    assert read_all(client) == b"" and not transport._tempDataBuffer


async def test_the_hub_hands_each_connection_a_messages_events_together_in_seq_order():
    from realtime.hub import Hub, _Unit

    class Connection:
        user_id, unit_id = "u", "unit-1"

        def __init__(self):
            self.calls = []

        def deliver_all(self, events):
            self.calls.append([event.seq for event in events])

    hub, unit = Hub(), _Unit()
    connections = [Connection() for _ in range(3)]
    unit.listeners, unit.delivered = set(connections), 4
    hub._deliver(unit, [(5, '{"seq":5}'), (6, '{"seq":6}'), (8, '{"seq":8}')])  # 8: a hole, left to the fill
    assert all(c.calls == [[5, 6]] for c in connections) and unit.delivered == 6
    assert hub.delivered_total == 6
