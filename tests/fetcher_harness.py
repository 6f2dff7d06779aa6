"""The local image server, offline DNS and loopback-only connection guard of the fetcher tests
(tests/fetcher/, whose conftest.py holds the fixtures): fetch_many runs against a threaded HTTP server on 127.0.0.1 and no other
address is ever contacted.

DNS is faked for the names the tests use (localhost, pinned.test, evil.test, ...); any other name is
resolved with AI_NUMERICHOST only, so no DNS query leaves the machine. Every connection the
fetcher opens goes through a spy on socket.create_connection, which refuses anything but loopback.
Each test module installs both as autouse fixtures (`fake_dns`, `loopback_only`) and serves one
`start_server()` for its tests.
"""
from __future__ import annotations

import socket
import ssl
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from PIL import Image

from realsyn_spark.config import FetchConfig
from realsyn_spark.fetcher import FetchResult, fetch_many
from tests.image_payloads import bomb_png, encode, exif_rotated_jpeg, noisy_rgb


# -- payloads -------------------------------------------------------------------------------------------

JPEG = encode(Image.new("RGB", (50, 40), "blue"), "JPEG")
PNG = encode(Image.new("RGB", (32, 24), "green"), "PNG")
NOISY_JPEG = encode(noisy_rgb(96, 96), "JPEG")
TRUNCATED_JPEG = NOISY_JPEG[: len(NOISY_JPEG) // 2]
HTML = b"<!doctype html><html><body>404 - not here</body></html>"
BIG_BODY = JPEG[:64] + b"\x00" * 2_000_000
MAX_BYTES = 200_000  # small limit so BIG_BODY is "too large"


# -- local server ---------------------------------------------------------------------------------------

class Recorder:
    """What the server saw: request paths (with query), Host headers, client ports, peak concurrency."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.paths: list[str] = []
            self.hosts: list[str] = []
            self.client_ports: set[int] = set()
            self.in_flight = 0
            self.peak_in_flight = 0

    def saw(self, handler: BaseHTTPRequestHandler):
        with self.lock:
            self.paths.append(handler.path)
            self.hosts.append(handler.headers.get("Host", ""))
            self.client_ports.add(handler.client_address[1])

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for p in self.paths if p == path)

    def enter(self):
        with self.lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def leave(self):
        with self.lock:
            self.in_flight -= 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real image hosts do
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall between the header and body writes

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        self.server.recorder.saw(self)
        url = urlsplit(self.path)
        route = getattr(self, "route_" + url.path.strip("/").replace("-", "_").replace(".", "_"), None)
        try:
            if route is None:
                self.send_body(404, HTML, "text/html")
            else:
                route(parse_qs(url.query))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (timeout, too_large): expected

    # helpers
    def send_body(self, code: int, body: bytes, content_type: str = "image/jpeg", headers: dict | None = None):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    # routes
    def route_good_jpg(self, q):
        self.send_body(200, JPEG)

    def route_good_png(self, q):
        self.send_body(200, PNG, "image/png")

    def route_exif_jpg(self, q):
        self.send_body(200, exif_rotated_jpeg())

    def route_truncated_jpg(self, q):
        self.send_body(200, TRUNCATED_JPEG)

    def route_bomb_png(self, q):
        self.send_body(200, self.server.bomb, "image/png")

    def route_png_as_html(self, q):
        self.send_body(200, PNG, "text/html")

    def route_html_as_jpeg(self, q):
        self.send_body(200, HTML, "image/jpeg")

    def route_empty(self, q):
        self.send_body(200, b"")

    def route_missing(self, q):
        self.send_body(404, HTML, "text/html")

    def route_always500(self, q):
        self.send_body(500, b"oops", "text/plain")

    def route_flaky(self, q):
        # 500 on the first request for this exact path, 200 afterwards
        first = self.server.recorder.count(self.path) == 1
        self.send_body(500, b"oops", "text/plain") if first else self.send_body(200, JPEG)

    def route_slow(self, q):
        time.sleep(float(q.get("s", ["1.0"])[0]))
        self.send_body(200, JPEG)

    def route_slowish(self, q):
        self.server.recorder.enter()
        try:
            time.sleep(0.1)
        finally:
            self.server.recorder.leave()
        self.send_body(200, JPEG)

    def route_drip(self, q):
        # Valid headers at once, then one byte every 50 ms: each read is quick, the whole body is not.
        self.send_response(200)
        self.send_header("Content-Length", str(len(NOISY_JPEG)))
        self.end_headers()
        for i in range(len(NOISY_JPEG)):
            self.wfile.write(NOISY_JPEG[i:i + 1])
            self.wfile.flush()
            time.sleep(0.05)

    def route_slow_hop(self, q):
        # Just under a 0.5 s hop timeout, then a redirect to the next hop; the fourth hop never answers.
        n = int(q["n"][0])
        time.sleep(0.4 if n < 3 else 5.0)
        self.send_body(302, b"", "text/plain", {"Location": f"/slow-hop?n={n + 1}"})

    def route_redirect(self, q):
        self.send_body(302, b"", "text/plain", {"Location": q["to"][0]})

    def route_loop(self, q):
        self.send_body(302, b"", "text/plain", {"Location": "/loop"})

    def route_big_cl(self, q):
        self.send_body(200, BIG_BODY)

    def route_big_close(self, q):
        # HTTP/1.0 style: no Content-Length, the body ends when the server closes.
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        for start in range(0, len(BIG_BODY), 65536):
            self.wfile.write(BIG_BODY[start:start + 65536])

    def route_big_chunked(self, q):
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for start in range(0, len(BIG_BODY), 65536):
            piece = BIG_BODY[start:start + 65536]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # The fetcher hangs up mid-response on purpose (too_large, not_an_image, timeouts); the server's
        # next read on that connection then fails. Not worth a traceback in the test output.
        pass


def start_server(tls_context: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
    server = QuietServer(("127.0.0.1", 0), Handler)
    server.recorder = Recorder()
    server.bomb = bomb_png(20000, 20000)
    if tls_context is not None:
        server.socket = tls_context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@contextmanager
def running(server: ThreadingHTTPServer):
    """Shuts `server` down after the block (a module fixture's lifetime)."""
    yield server
    server.shutdown()
    server.server_close()


def reset(server: ThreadingHTTPServer) -> ThreadingHTTPServer:
    """The module's server with a fresh recorder, for one test."""
    server.recorder.reset()
    return server


def base_url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


# -- network guards -------------------------------------------------------------------------------------

FAKE_DNS = {
    "localhost": ["127.0.0.1"],  # not even /etc/hosts: the test run never depends on the host's resolver
    "pinned.test": ["127.0.0.1"],
    "other.test": ["127.0.0.1"],
    "evil.test": ["93.184.215.14", "10.0.0.7"],  # one public, one private answer
}
_real_getaddrinfo = socket.getaddrinfo
_real_create_connection = socket.create_connection


def fake_dns(monkeypatch) -> list[str]:
    """Resolve test names from FAKE_DNS; anything else only numerically (AI_NUMERICHOST: no query)."""
    lookups: list[str] = []

    def fake_getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        lookups.append(host)
        if host == "resolver-down.test":
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host in FAKE_DNS:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in FAKE_DNS[host]]
        return _real_getaddrinfo(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    return lookups


def loopback_only(monkeypatch) -> list[tuple[str, int]]:
    """Every (address, port) the fetcher connects to; refuses (and records) anything but loopback."""
    attempts: list[tuple[str, int]] = []

    def spy(address, timeout=None, *args, **kwargs):
        attempts.append(address[:2])
        if address[0] not in ("127.0.0.1", "::1"):
            raise AssertionError(f"test tried to connect to {address}")
        return _real_create_connection(address, timeout, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", spy)
    return attempts


def cfg(**overrides) -> FetchConfig:
    settings = dict(timeout_s=2.0, retries=0, max_bytes=MAX_BYTES, concurrency_per_task=4,
                    allow_private_hosts=["127.0.0.1"])
    settings.update(overrides)
    return FetchConfig(**settings)


def fetch_one(url: str, **overrides) -> FetchResult:
    return fetch_many([url], cfg(**overrides), backoff_base_s=0.01)[0]
