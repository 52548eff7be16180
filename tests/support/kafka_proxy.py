"""A TCP proxy in front of a Kafka broker that clients cannot go around: a broker outage for the roles
behind it, without stopping the broker other tests share.

A plain TCP proxy only carries the bootstrap connection: the broker's metadata answer advertises its own
address, and clients connect there directly. This proxy reads the Kafka framing (a 4-byte size, then the
message), remembers which request each correlation id was, and in the answers that carry broker addresses
(Metadata, FindCoordinator, DescribeCluster) replaces the advertised port with its own. The host stays the
same (both are 127.0.0.1), so the replacement has the same length and no size field changes.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator

from tests.support.tcp_proxy import TcpProxy

_ADDRESS_BEARING = {3, 10, 60}  # Metadata, FindCoordinator, DescribeCluster


def _read_exact(sock: socket.socket, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _frames(sock: socket.socket) -> Iterator[tuple[bytes, bytes]]:
    while (head := _read_exact(sock, 4)) is not None:
        body = _read_exact(sock, struct.unpack(">i", head)[0])
        if body is None:
            return
        yield head, body


class KafkaProxy(TcpProxy):
    def __init__(self, broker_host: str, broker_port: int) -> None:
        if broker_host != "127.0.0.1":
            raise ValueError(f"KafkaProxy rewrites same-length addresses only (broker at {broker_host})")
        super().__init__(broker_host, broker_port)
        host = broker_host.encode()
        self._advertised = host + struct.pack(">i", broker_port)
        self._proxied = host + struct.pack(">i", self.port)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        requests: dict[int, int] = {}  # correlation id -> api key
        threading.Thread(target=self._requests, args=(client, upstream, requests), daemon=True).start()
        threading.Thread(target=self._responses, args=(upstream, client, requests), daemon=True).start()

    def _requests(self, source: socket.socket, sink: socket.socket, requests: dict[int, int]) -> None:
        try:
            for head, body in _frames(source):
                api_key, _version, correlation_id = struct.unpack(">hhi", body[:8])
                requests[correlation_id] = api_key
                sink.sendall(head + body)
        except OSError:
            pass
        finally:
            self._close(source, sink)

    def _responses(self, source: socket.socket, sink: socket.socket, requests: dict[int, int]) -> None:
        try:
            for head, body in _frames(source):
                (correlation_id,) = struct.unpack(">i", body[:4])
                if requests.pop(correlation_id, None) in _ADDRESS_BEARING:
                    body = body.replace(self._advertised, self._proxied)
                sink.sendall(head + body)
        except OSError:
            pass
        finally:
            self._close(source, sink)

    @staticmethod
    def _close(*socks: socket.socket) -> None:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.close()
