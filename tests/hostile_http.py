"""A raw-socket HTTP server on 127.0.0.1 that misbehaves on purpose, one shape per path.

Used by tests/fetcher/test_fetcher_protocol.py, tests/test_ingest_fetch.py and bench/bench_fetcher.py --hostile.
Each connection reads one request and then plays the shape named by the first path segment
(`/header-drip/...`); dripping shapes go on until the client hangs up (or `FOREVER_S` passes), so any
fetch that ends does so because of the fetcher's own deadlines. `server.hangups` records, per shape,
how long each connection was held by the client.
"""
from __future__ import annotations

import gzip
import io
import socket
import threading
import time
import zlib
from collections import defaultdict

from PIL import Image

FOREVER_S = 60.0  # a dripping shape gives up after this long: far beyond any deadline under test
TICK_S = 0.05


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), "purple").save(buffer, "JPEG")
    return buffer.getvalue()


JPEG = _jpeg()
OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"


def _drip(conn: socket.socket, pieces, tick_s: float = TICK_S) -> None:
    end = time.monotonic() + FOREVER_S
    for piece in pieces:
        if time.monotonic() > end:
            return
        conn.sendall(piece)
        time.sleep(tick_s)


def _forever(piece: bytes):
    while True:
        yield piece


def _hold(conn: socket.socket) -> None:
    """Send nothing more; return when the client hangs up (a recv, so the hang-up is seen at once)."""
    conn.settimeout(FOREVER_S)
    while conn.recv(4096):
        pass


def _status_drip(conn):
    _drip(conn, (bytes([b]) for b in b"HTTP/1.1 200 OK\r\n" + b"X" * 10_000_000))


def _header_drip(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    _drip(conn, _forever(b"a"))


def _header_lines_drip(conn):
    # A new short header line every tick: stays below http.client's line limit for a long time.
    conn.sendall(OK_HEAD)
    _drip(conn, (b"X-%d: v\r\n" % i for i in range(10_000_000)))


def _interim_100(conn):
    _drip(conn, _forever(b"HTTP/1.1 100 Continue\r\n\r\n"))


def _interim_103(conn):
    _drip(conn, _forever(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"))


def _many_headers(conn):
    conn.sendall(OK_HEAD + b"".join(b"X-%d: v\r\n" % i for i in range(10_000)) + b"\r\n" + JPEG)


def _long_header(conn):
    conn.sendall(OK_HEAD + b"X-Long: " + b"a" * 200_000 + b"\r\n\r\n" + JPEG)


def _tiny_chunks(conn):
    conn.sendall(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(JPEG[:64]), JPEG[:64]))
    _drip(conn, _forever(b"1\r\n\x00\r\n"), 0.01)


def _length_over_stall(conn):
    conn.sendall(OK_HEAD + b"Content-Length: %d\r\n\r\n" % (len(JPEG) * 10) + JPEG)
    _hold(conn)


def _length_over_close(conn):
    conn.sendall(OK_HEAD + b"Content-Length: %d\r\n\r\n" % (len(JPEG) * 10) + JPEG)


def _length_under(conn):
    conn.sendall(OK_HEAD + b"Content-Length: %d\r\n\r\n" % (len(JPEG) // 2) + JPEG)


def _bad_status(conn):
    conn.sendall(b"HTTP/1.1 abc Nonsense\r\n\r\n")


def _not_http(conn):
    conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")


def _switching(conn):
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")


def _silent(conn):
    _hold(conn)  # accepts, never answers (also a TLS handshake that never comes)


def _gzip_ok(conn):
    body = gzip.compress(JPEG)
    conn.sendall(OK_HEAD + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


_BOMB: list[bytes] = []


def gzip_bomb() -> bytes:
    """A JPEG header plus 64 MiB of zeros, gzipped: about 65 KB on the wire (made once)."""
    if not _BOMB:
        compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        block = b"\x00" * (1 << 20)
        _BOMB.append(compressor.compress(JPEG[:64]) + b"".join(compressor.compress(block) for _ in range(64))
                     + compressor.flush())
    return _BOMB[0]


def _gzip_bomb(conn):
    body = gzip_bomb()
    conn.sendall(OK_HEAD + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def _gzip_corrupt(conn):
    body = gzip.compress(JPEG)[:20] + b"\xff" * 64
    conn.sendall(OK_HEAD + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def _brotli(conn):
    conn.sendall(OK_HEAD + b"Content-Encoding: br\r\nContent-Length: %d\r\n\r\n" % len(JPEG) + JPEG)


def _bad_location(conn):
    conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: http://[127.0.0.1]/x\r\nContent-Length: 0\r\n\r\n")


SHAPES = {
    "status-drip": _status_drip, "header-drip": _header_drip, "header-lines-drip": _header_lines_drip,
    "interim-100": _interim_100, "interim-103": _interim_103, "many-headers": _many_headers,
    "long-header": _long_header, "tiny-chunks": _tiny_chunks, "length-over-stall": _length_over_stall,
    "length-over-close": _length_over_close, "length-under": _length_under, "bad-status": _bad_status,
    "not-http": _not_http, "switching": _switching, "silent": _silent, "gzip-ok": _gzip_ok,
    "gzip-bomb": _gzip_bomb, "gzip-corrupt": _gzip_corrupt, "brotli": _brotli, "bad-location": _bad_location,
}
# shape -> the status the fetcher must report
EXPECTED = {
    "status-drip": "timeout", "header-drip": "timeout", "header-lines-drip": "timeout",
    "interim-100": "timeout", "interim-103": "timeout", "many-headers": "protocol_error",
    "long-header": "protocol_error", "tiny-chunks": "timeout", "length-over-stall": "timeout",
    "length-over-close": "protocol_error", "length-under": "decode_error", "bad-status": "protocol_error",
    "not-http": "protocol_error", "switching": "protocol_error", "silent": "timeout", "gzip-ok": "ok",
    "gzip-bomb": "too_large", "gzip-corrupt": "protocol_error", "brotli": "protocol_error",
    "bad-location": "invalid_url",
}


class HostileServer:
    """Threaded accept loop on 127.0.0.1; `url(shape)` gives a URL for a shape."""

    def __init__(self):
        gzip_bomb()  # built before serving, so its ~1 s of compression is not billed to a fetch
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.hangups: dict[str, list[float]] = defaultdict(list)
        self.requests: dict[str, int] = defaultdict(int)
        self.spans: list[tuple[float, float]] = []  # (accepted, hung up) in time.monotonic(), per connection
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, shape: str, tag: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{shape}/{tag}"

    def close(self) -> None:
        self._closed = True
        self.sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        start = time.monotonic()
        shape = "?"
        try:
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 65536:
                data = conn.recv(4096)
                if not data:
                    return
                request += data
            path = request.split(b" ", 2)[1].decode("latin-1")
            shape = path.strip("/").split("/", 1)[0]
            with self.lock:
                self.requests[shape] += 1
            SHAPES.get(shape, _bad_status)(conn)
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(FOREVER_S)
            while conn.recv(4096):  # wait for the client to hang up
                pass
        except OSError:
            pass  # the client hung up: what a deadline does
        finally:
            conn.close()
            with self.lock:
                self.hangups[shape].append(time.monotonic() - start)
                self.spans.append((start, time.monotonic()))
