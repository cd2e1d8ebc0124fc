"""The load driver's client: a kept-alive connection the server closed is reopened, not failed on."""

from __future__ import annotations

import http.client
import socket
import time

from fanbu.serve.loadtest import _drop_if_closed


def test_a_connection_the_server_closed_is_dropped_and_an_open_one_kept() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(2)
        port = listener.getsockname()[1]
        kept = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        kept.connect()
        closed = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        closed.connect()
        first, _ = listener.accept()
        second, _ = listener.accept()
        second.close()  # as uvicorn does after its keep-alive timeout
        deadline = time.monotonic() + 5
        while closed.sock is not None and time.monotonic() < deadline:
            _drop_if_closed(closed)
        _drop_if_closed(kept)
        assert closed.sock is None  # the next request reconnects
        assert kept.sock is not None
        kept.close()
        first.close()
