"""A small fault-injecting TCP proxy on 127.0.0.1, for S3 fault tests (standard library only).

It forwards every connection to an upstream server (the moto server) and can be switched
between three behaviours, at once or after a number of request bytes (so that a fault hits
in the middle of a call, even in the middle of one request):

- ``pass``: forward everything both ways;
- ``drop``: close the client's connection (the bytes of a request cut off mid-way); new
  connections are closed as soon as they are accepted;
- ``drop_replies``: forward requests to the server, which carries them out, but close the
  client's connection instead of forwarding any reply (a lost reply);
- ``stall``: keep connections open and forward nothing (a server that stops answering).

The server keeps its data throughout: :meth:`FaultProxy.heal` switches back to ``pass``
and closes the connections that were stalled or dropped.

Requests reach the server whole or not at all: the proxy forwards a request once it has
all of its body (``Content-Length``). S3 discards an upload cut off mid-way, but moto
stores whatever part of the body it got, under the checksum the client sent for the whole.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import threading
from typing import Literal

__all__ = ["Fault", "FaultProxy"]

Fault = Literal["pass", "drop", "drop_replies", "stall"]

_CHUNK = 65536
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_UNFRAMED = re.compile(rb"\r\n(transfer-encoding:[ \t]*chunked|expect:[ \t]*100-continue)", re.IGNORECASE)


class _Requests:
    """The requests of one connection, released whole (headers and ``Content-Length`` bytes of body)."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self._streaming = False  # a request the proxy cannot frame: bytes go through as they come

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the client; return those of the requests now complete."""
        if self._streaming:
            return data
        self._pending += data
        out = bytearray()
        while (end := self._pending.find(b"\r\n\r\n")) >= 0:
            head = bytes(self._pending[: end + 2])
            if _UNFRAMED.search(head):
                self._streaming = True
                out += self._pending
                self._pending.clear()
                break
            found = _LENGTH.search(head)
            size = end + 4 + (int(found.group(1)) if found else 0)
            if len(self._pending) < size:
                break
            out += self._pending[:size]
            del self._pending[:size]
        return bytes(out)


class FaultProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream`` (``host``, ``port``) with switchable faults."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._guard = threading.Lock()
        self._mode: Fault = "pass"
        self._armed: Fault | None = None
        self._budget = 0  # request bytes still forwarded before the armed fault starts
        self._pattern: bytes | None = None  # a request that starts the armed fault once it reached the server
        self.request_bytes = 0  # request bytes forwarded since the last reset_counts
        self.connections = 0
        self._open: set[socket.socket] = set()
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)  # so that close() ends the accept loop at once
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The endpoint URL clients use."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def mode(self) -> Fault:
        """The behaviour in force."""
        return self._mode

    # --- switching ---------------------------------------------------------------------

    def fault(self, mode: Fault, after_bytes: int = 0) -> None:
        """Switch to ``mode`` now, or once ``after_bytes`` more request bytes went through."""
        with self._guard:
            if after_bytes <= 0:
                self._mode, self._armed = mode, None
            else:
                self._armed, self._budget = mode, after_bytes
        if after_bytes <= 0 and mode in ("drop", "drop_replies"):
            self._close_all()

    def fault_after(self, pattern: bytes, mode: Fault) -> None:
        """Switch to ``mode`` once a request containing ``pattern`` reached the server (its reply is lost)."""
        with self._guard:
            self._armed, self._budget, self._pattern = mode, 0, pattern

    def heal(self) -> None:
        """Back to ``pass``; connections open during the fault are closed (clients reconnect)."""
        with self._guard:
            self._mode, self._armed, self._pattern = "pass", None, None
        self._close_all()

    def reset_counts(self) -> None:
        """Start counting request bytes and connections afresh."""
        with self._guard:
            self.request_bytes = 0
            self.connections = 0

    def close(self) -> None:
        """Stop listening and close every connection."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._close_all()
        self._thread.join(timeout=5)

    # --- forwarding --------------------------------------------------------------------

    def _close_all(self) -> None:
        with self._guard:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            _close(sock)

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._guard:
                self.connections += 1
                mode = self._mode
            if mode == "drop":
                _close(client)
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            _close(client)
            return
        server.settimeout(None)
        with self._guard:
            self._open.update((client, server))
        try:
            self._pump(client, server, _Requests())
        finally:
            with self._guard:
                self._open.discard(client)
                self._open.discard(server)
            _close(client)
            _close(server)

    def _pump(self, client: socket.socket, server: socket.socket, requests: _Requests) -> None:
        while not self._closed.is_set():
            if self._mode == "stall":
                self._closed.wait(0.05)  # read nothing, forward nothing, until healed or closed
                if client.fileno() < 0 or server.fileno() < 0:
                    return
                continue
            try:
                ready, _, _ = select.select([client, server], [], [], 0.05)
            except (OSError, ValueError):
                return  # closed by heal() or close()
            for sock in ready:
                if not self._forward(sock, server if sock is client else client, requests if sock is client else None):
                    return

    def _forward(self, source: socket.socket, target: socket.socket, requests: _Requests | None) -> bool:
        """Move one read from ``source`` to ``target`` (requests whole); False when the connection ends."""
        request = requests is not None
        try:
            data = source.recv(_CHUNK)
        except OSError:
            return False
        if not data:
            return False
        with self._guard:
            mode = self._mode
            if request and self._armed is not None and self._pattern is None:
                if len(data) >= self._budget:
                    if self._armed != "drop_replies":  # the server gets the request whole
                        data = data[: self._budget]
                    self._mode, self._armed = self._armed, None
                    cut = True
                else:
                    self._budget -= len(data)
                    cut = False
            else:
                cut = False
            if request:
                self.request_bytes += len(data)
        if requests is not None and (mode != "drop" or cut):
            data = requests.feed(data)
        if request and self._pattern is not None and self._pattern in data:
            with self._guard:
                self._mode, self._armed, self._pattern = self._armed or "drop", None, None
            with contextlib.suppress(OSError):
                target.sendall(data)
            return True  # the server carries it out; the fault meets its reply
        if cut:  # the fault starts inside this read: forward the requests completed before it
            with contextlib.suppress(OSError):
                target.sendall(data)
            return self._mode == "drop_replies" or self._mode == "stall"
        if mode == "drop" or (mode == "drop_replies" and not request):
            return False
        if mode == "stall":
            return True
        try:
            if data:
                target.sendall(data)
        except OSError:
            return False
        return True


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
