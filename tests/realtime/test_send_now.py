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
