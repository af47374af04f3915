"""The tests' Event Grid receiver stays quiet when a publisher gives up on it: a client that disconnects before
the answer is what a hanging topic produces on purpose, not an error of the receiver to print on stderr."""

from __future__ import annotations

import socket
import struct
import time

from tests.eventgrid_receiver import EventGridReceiver


def test_an_answer_nobody_waits_for_is_dropped_without_a_traceback(capsys):
    with EventGridReceiver() as receiver:
        receiver.hang()
        client = socket.create_connection((receiver.host, receiver.port))
        client.sendall(b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n[]")
        deadline = time.monotonic() + 5
        while not receiver.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        # The publisher's read timeout: it goes away abruptly (RST), before the answer.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        receiver.release()
        while receiver.handled < 1 and time.monotonic() < deadline:
            time.sleep(0.01)

    assert receiver.handled == 1 and len(receiver.requests) == 1
    assert "Exception occurred during processing of request" not in capsys.readouterr().err
