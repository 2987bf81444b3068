"""The broker's socket as paho uses it, buffered both ways (server_app/mqtt.py puts it in place of
paho's own socket once connected; pyproject pins paho-mqtt below 2.3 for that)."""

from __future__ import annotations

import socket
import ssl

RECV_BYTES = 1 << 18


class BufferedSocket:
    """The broker's socket as paho uses it, buffered both ways (paho has no hook for this: it is
    put in place of paho's own socket once connected).

    Reads: one recv() of up to 256 KiB; paho's small reads (one byte of packet type, one per
    length byte, then the rest: 3-4 system calls per packet) are served from that buffer.
    Writes: paho's sends (one per packet: an answer, a PUBACK) are collected and leave in one
    send() per turn of the serving loop (`flush`, called by MqttTransport before it waits on
    the socket and after each poll). Everything else goes to the socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""
        self._pos = 0
        self._unsent = bytearray()

    def recv(self, size: int) -> bytes:
        pos = self._pos
        if pos >= len(self._buffer):
            data = self._sock.recv(RECV_BYTES)  # BlockingIOError when empty; b"" when closed
            if not data:
                return data
            self._buffer, pos = data, 0
        chunk = self._buffer[pos : pos + size]
        self._pos = pos + len(chunk)
        return chunk

    def send(self, data: bytes | bytearray) -> int:
        self._unsent += data
        return len(data)

    def flush(self) -> None:
        """Write what paho sent since the last flush, as much as the socket takes without
        blocking (the rest at the next flush, once select says the socket is writable). A
        broken connection drops it: paho resends unconfirmed answers after reconnecting and the
        broker redelivers unacknowledged requests, as after any lost connection."""
        if not self._unsent:
            return
        try:
            written = self._sock.send(self._unsent)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return
        except OSError:
            self._unsent.clear()  # the read side finds the connection lost
            return
        del self._unsent[:written]

    @property
    def unsent(self) -> int:
        return len(self._unsent)

    def buffered(self) -> int:
        """Bytes read and not yet taken by paho (plus, over TLS, what the SSL layer holds decrypted)."""
        held = self._sock.pending() if isinstance(self._sock, ssl.SSLSocket) else 0
        return len(self._buffer) - self._pos + held

    def close(self) -> None:
        """paho closes the socket right after writing DISCONNECT: what is unsent goes first."""
        if self._unsent:
            try:
                self._sock.settimeout(1.0)
                self._sock.sendall(self._unsent)
            except OSError:
                pass
            self._unsent.clear()
        self._sock.close()

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)
