"""fetch_many against a local threaded HTTP server on 127.0.0.1 (no other address is ever contacted).

DNS is faked for the names the tests use (localhost, pinned.test, evil.test, ...); any other name is
resolved with AI_NUMERICHOST only, so no DNS query leaves the machine. Every connection the
fetcher opens goes through a spy on socket.create_connection, which refuses anything but loopback.
"""
from __future__ import annotations

import io
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

from realsyn_spark.config import FetchConfig
from realsyn_spark.fetcher import FetchResult, ImageFetcher, _ConnectionPool, fetch_many, is_public_address


# -- payloads -------------------------------------------------------------------------------------------

def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """Valid 1-bit PNG, tiny on the wire, width*height pixels once decoded."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: stored 60x30 displays as 30x60
    return encode(Image.new("RGB", (60, 30), "red"), "JPEG", exif=exif.tobytes())


JPEG = encode(Image.new("RGB", (50, 40), "blue"), "JPEG")
PNG = encode(Image.new("RGB", (32, 24), "green"), "PNG")
NOISY_JPEG = encode(Image.effect_noise((96, 96), 64).convert("RGB"), "JPEG")
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


@pytest.fixture(scope="module")
def http_server():
    server = start_server()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def server(http_server):
    http_server.recorder.reset()
    return http_server


@pytest.fixture
def base(server) -> str:
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


@pytest.fixture(autouse=True)
def offline_dns(monkeypatch):
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


@pytest.fixture(autouse=True)
def connections(monkeypatch):
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


# -- good images and content sniffing -------------------------------------------------------------------

def test_good_jpeg_and_png(base):
    jpeg, png = fetch_many([f"{base}/good.jpg", f"{base}/good.png"], cfg())
    assert (jpeg.status, jpeg.http_status, jpeg.data, jpeg.attempts) == ("ok", 200, JPEG, 1)
    assert (jpeg.image.width, jpeg.image.height, jpeg.image.format) == (50, 40, "JPEG")
    assert jpeg.final_url == f"{base}/good.jpg" and jpeg.error is None
    assert (png.status, png.data, png.image.format, png.content_type) == ("ok", PNG, "PNG", "image/png")


def test_content_type_is_ignored_in_favour_of_magic_bytes(base):
    png, html = fetch_many([f"{base}/png-as-html", f"{base}/html-as-jpeg"], cfg())
    assert (png.status, png.content_type, png.image.format) == ("ok", "text/html", "PNG")
    assert (html.status, html.data) == ("not_an_image", None)


def test_empty_body_is_not_an_image(base):
    assert fetch_one(f"{base}/empty").status == "not_an_image"


def test_truncated_jpeg_is_decode_error(base):
    result = fetch_one(f"{base}/truncated.jpg")
    assert (result.status, result.data) == ("decode_error", None)
    assert "truncated" in result.error


def test_decompression_bomb_refused_as_too_large_without_decoding(base):
    start = time.perf_counter()
    result = fetch_one(f"{base}/bomb.png")
    assert time.perf_counter() - start < 3.0  # decoding 400 M pixels would take far longer
    assert (result.status, result.data) == ("too_large", None)
    assert result.image.status == "too_many_pixels" and "pixels" in result.error


def test_exif_rotation_reported_in_dimensions(base):
    result = fetch_one(f"{base}/exif.jpg")
    assert result.status == "ok"
    assert (result.image.width, result.image.height) == (30, 60)


# -- size limits ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("route", ["big-cl", "big-close", "big-chunked"])
def test_oversized_body_is_too_large(base, route):
    result = fetch_one(f"{base}/{route}")
    assert (result.status, result.data, result.http_status) == ("too_large", None, 200)
    assert "max_bytes" in result.error


def test_content_length_refused_before_reading(base):
    assert "Content-Length" in fetch_one(f"{base}/big-cl").error


# -- timeouts and retries -------------------------------------------------------------------------------

def test_slow_response_times_out_and_is_retried(server, base):
    start = time.perf_counter()
    result = fetch_one(f"{base}/slow?s=1.5", timeout_s=0.3, retries=1)
    elapsed = time.perf_counter() - start
    assert (result.status, result.attempts) == ("timeout", 2)
    assert 0.6 <= elapsed < 2.5  # two 0.3 s deadlines plus backoff, far below the 1.5 s server delay x2
    assert server.recorder.count("/slow?s=1.5") == 2


def test_dripping_body_cannot_outlive_the_deadline(base):
    start = time.perf_counter()
    result = fetch_one(f"{base}/drip", timeout_s=0.5)
    assert result.status == "timeout"
    assert time.perf_counter() - start < 2.0  # the drip would take ~20 minutes to finish


def test_500_then_success_is_retried(server, base):
    result = fetch_one(f"{base}/flaky?k=1", retries=2)
    assert (result.status, result.attempts, result.data) == ("ok", 2, JPEG)
    assert server.recorder.count("/flaky?k=1") == 2


def test_persistent_500_gives_up_after_retries(server, base):
    result = fetch_one(f"{base}/always500", retries=2)
    assert (result.status, result.http_status, result.attempts) == ("http_error", 500, 3)
    assert server.recorder.count("/always500") == 3


def test_404_is_not_retried(server, base):
    result = fetch_one(f"{base}/missing", retries=2)
    assert (result.status, result.http_status, result.attempts) == ("http_error", 404, 1)
    assert server.recorder.count("/missing") == 1


def test_connection_refused_is_connection_error():
    with socket.socket() as probe:  # find a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = fetch_one(f"http://127.0.0.1:{port}/x.jpg", retries=1)
    assert (result.status, result.attempts) == ("connection_error", 2)


# -- redirects ------------------------------------------------------------------------------------------

def test_relative_redirect_is_followed(base):
    result = fetch_one(f"{base}/redirect?to=/good.jpg")
    assert (result.status, result.final_url, result.data) == ("ok", f"{base}/good.jpg", JPEG)


def test_redirect_loop_is_too_many_redirects(server, base):
    result = fetch_one(f"{base}/loop")
    assert result.status == "too_many_redirects"
    assert server.recorder.count("/loop") == 6  # the first request plus 5 followed redirects


def test_redirect_from_allowed_host_to_loopback_ip_is_blocked(server):
    port = server.server_address[1]
    target = f"http://127.0.0.1:{port}/good.jpg"
    result = fetch_one(f"http://localhost:{port}/redirect?to={target}", allow_private_hosts=["localhost"])
    assert (result.status, result.final_url) == ("blocked", target)
    assert server.recorder.paths == [f"/redirect?to={target}"]  # the target was never requested


def test_redirect_to_metadata_service_is_blocked(server, base, connections):
    result = fetch_one(f"{base}/redirect?to=http://169.254.169.254/latest/meta-data/")
    assert result.status == "blocked"
    assert all(address[0] == "127.0.0.1" for address in connections)


# -- SSRF policy ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://0.0.0.0/",
    "http://224.0.0.1/",
    "http://[::1]/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://2130706433/",  # 127.0.0.1 in decimal
    "http://127.1/",
    "http://localhost:1/",  # not allow-listed in this test
    "http://evil.test/",  # one public and one private address: any bad address blocks
])
def test_private_and_special_addresses_are_blocked_before_connecting(server, connections, url):
    start = time.perf_counter()
    result = fetch_one(url, allow_private_hosts=[], retries=2)
    assert (result.status, result.attempts) == ("blocked", 1)
    assert time.perf_counter() - start < 1.0
    assert connections == [] and server.recorder.paths == []


@pytest.mark.parametrize("url", ["ftp://x/", "file:///etc/passwd", "javascript:alert(1)", "", "not a url",
                                 "http://", "http://exa mple.com/", "http://host:99999/", None])
def test_invalid_urls_never_connect(connections, url):
    result = fetch_one(url, allow_private_hosts=[])
    assert result.status == "invalid_url"
    assert connections == []


def test_allow_list_matches_the_host_as_written(base, server):
    port = server.server_address[1]
    by_ip_only = fetch_one(f"http://localhost:{port}/good.jpg", allow_private_hosts=["127.0.0.1"])
    by_name = fetch_one(f"http://localhost:{port}/good.jpg", allow_private_hosts=["LOCALHOST"])
    assert (by_ip_only.status, by_name.status) == ("blocked", "ok")


@pytest.mark.parametrize("address, public", [
    ("8.8.8.8", True), ("2606:4700:4700::1111", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.31.0.1", False), ("192.168.0.1", False),
    ("169.254.169.254", False), ("100.64.1.1", False), ("0.0.0.0", False), ("255.255.255.255", False),
    ("224.0.0.251", False), ("240.0.0.1", False), ("::", False), ("::1", False), ("fe80::1%eth0", False),
    ("fd00::1", False), ("fec0::1", False), ("ff02::1", False), ("::ffff:10.0.0.1", False),
    ("::ffff:8.8.8.8", True), ("64:ff9b::a00:1", False), ("2002:a00:1::", False), ("not-an-ip", False),
])
def test_is_public_address(address, public):
    assert is_public_address(address) is public


def test_connection_is_pinned_to_the_validated_address(server, offline_dns, connections):
    port = server.server_address[1]
    result = fetch_one(f"http://pinned.test:{port}/good.jpg", allow_private_hosts=["pinned.test"])
    assert result.status == "ok"
    assert server.recorder.hosts == [f"pinned.test:{port}"]  # Host header keeps the name ...
    assert connections == [("127.0.0.1", port)]  # ... while the socket goes to the validated IP
    assert offline_dns.count("pinned.test") == 1


def test_dns_answer_is_not_re_resolved_between_requests(server, offline_dns):
    # DNS rebinding: the first answer is validated and used for every later request of the batch.
    port = server.server_address[1]
    urls = [f"http://pinned.test:{port}/good.jpg?i={i}" for i in range(4)]
    results = fetch_many(urls, cfg(allow_private_hosts=["pinned.test"], concurrency_per_task=1))
    assert [r.status for r in results] == ["ok"] * 4
    assert offline_dns.count("pinned.test") == 1


def test_unknown_name_is_connection_error_without_retry(offline_dns):
    result = fetch_one("http://no-such-name.test/a.jpg", retries=2)
    assert (result.status, result.attempts) == ("connection_error", 1)
    assert "DNS" in result.error


def test_temporary_resolver_failure_is_retried(offline_dns):
    result = fetch_one("http://resolver-down.test/a.jpg", retries=2)
    assert (result.status, result.attempts) == ("connection_error", 3)
    assert offline_dns.count("resolver-down.test") == 3  # temporary failures are not cached


# -- concurrency, keep-alive, ordering ------------------------------------------------------------------

def test_results_keep_input_order(base):
    urls = [f"{base}/missing", f"{base}/good.jpg", "ftp://x/", f"{base}/good.png", "http://10.0.0.1/",
            f"{base}/html-as-jpeg"]
    statuses = [r.status for r in fetch_many(urls, cfg(allow_private_hosts=["127.0.0.1"]))]
    assert statuses == ["http_error", "ok", "invalid_url", "ok", "blocked", "not_an_image"]
    assert [r.url for r in fetch_many(urls, cfg())] == urls


def test_per_host_limit_caps_concurrent_requests(server, base):
    urls = [f"{base}/slowish?i={i}" for i in range(12)]
    results = fetch_many(urls, cfg(concurrency_per_task=8), per_host_limit=2)
    assert all(r.ok for r in results)
    assert server.recorder.peak_in_flight <= 2
    server.recorder.reset()
    fetch_many(urls, cfg(concurrency_per_task=8), per_host_limit=8)
    assert server.recorder.peak_in_flight > 2


def test_keep_alive_connections_are_reused(server, base):
    urls = [f"{base}/good.jpg?i={i}" for i in range(20)]
    with ImageFetcher(cfg(concurrency_per_task=2), per_host_limit=2) as fetcher:
        assert all(r.ok for r in fetcher.fetch_many(urls))
        assert all(r.ok for r in fetcher.fetch_many(urls))  # a second batch reuses the same pool
    assert len(server.recorder.client_ports) <= 2


def test_idle_pool_is_bounded_per_origin_and_in_total():
    class FakeConn:
        closed = False

        def close(self):
            self.closed = True

    pool = _ConnectionPool(max_per_key=2, max_total=3)
    conns = [FakeConn() for _ in range(5)]
    for key, conn in zip(["a", "a", "a", "b", "c"], conns):
        pool.give_back(("http", key, 80), conn)
    # third "a" refused (per-origin cap); then "c" pushes the total over 3, evicting the oldest "a"
    assert [c.closed for c in conns] == [True, False, True, False, False]
    assert pool.take(("http", "a", 80)) is conns[1]
    assert pool.take(("http", "a", 80)) is None
    pool.close_all()
    assert conns[3].closed and conns[4].closed and not conns[1].closed  # the taken one belongs to the caller


def test_per_host_semaphores_are_released(base):
    with ImageFetcher(cfg()) as fetcher:
        fetcher.fetch_many([f"{base}/good.jpg", f"{base}/missing", "http://10.0.0.1/"])
        assert fetcher._limiter._slots == {}


def test_never_raises_on_garbage_input():
    results = fetch_many([None, 42, "http://[::1", "http://%zz/", "h" * 10000], cfg())
    assert [r.status for r in results] == ["invalid_url"] * 5
    assert Counter(type(r) for r in results) == Counter({FetchResult: 5})


# -- HTTPS ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=pinned.test",
                    "-addext", "subjectAltName=DNS:pinned.test"], check=True, capture_output=True)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    server = start_server(server_context)
    yield server, ssl.create_default_context(cafile=str(cert))
    server.shutdown()
    server.server_close()


def test_https_uses_hostname_for_sni_and_certificate_while_pinned(tls_server, connections):
    server, client_context = tls_server
    port = server.server_address[1]
    result = fetch_many([f"https://pinned.test:{port}/good.jpg"], cfg(allow_private_hosts=["pinned.test"]),
                        ssl_context=client_context)[0]
    assert (result.status, result.data) == ("ok", JPEG)
    assert connections == [("127.0.0.1", port)]


def test_https_certificate_for_another_name_is_rejected(tls_server):
    server, client_context = tls_server
    port = server.server_address[1]
    result = fetch_many([f"https://other.test:{port}/good.jpg"],
                        cfg(allow_private_hosts=["other.test"], retries=2), ssl_context=client_context)[0]
    assert (result.status, result.attempts) == ("connection_error", 1)  # not retried: it will not change
    assert "certificate" in result.error.lower()


# -- hostile servers: wall-clock deadlines and one status per malformed shape ---------------------------

HOSTILE_TIMEOUT_S = 1.0
HOSTILE_URL_DEADLINE_S = 1.5
DEADLINE_MARGIN = 1.4  # elapsed / deadline: watchdog wake-up and thread scheduling on a busy machine


@pytest.fixture(scope="module")
def hostile():
    from tests.hostile_http import HostileServer

    server = HostileServer()
    yield server
    server.close()


def hostile_cfg(**overrides) -> FetchConfig:
    return cfg(timeout_s=HOSTILE_TIMEOUT_S, url_deadline_s=HOSTILE_URL_DEADLINE_S, retries=2, **overrides)


@pytest.mark.parametrize("shape", sorted(__import__("tests.hostile_http", fromlist=["EXPECTED"]).EXPECTED))
def test_hostile_shape_has_its_status_within_the_url_deadline(hostile, shape):
    from tests.hostile_http import EXPECTED, JPEG as HOSTILE_JPEG

    url = hostile.url(shape, "x.jpg")
    start = time.perf_counter()
    result = fetch_many([url], hostile_cfg(), backoff_base_s=0.01)[0]
    elapsed = time.perf_counter() - start
    assert result.status == EXPECTED[shape], (shape, result)
    assert elapsed / HOSTILE_URL_DEADLINE_S <= DEADLINE_MARGIN, (shape, elapsed)
    assert result.error is None if result.ok else result.error and "unexpected" not in result.error
    if result.ok:
        assert result.data == HOSTILE_JPEG
    if shape == "bad-location":  # the failing hop: the redirect target, tried once
        assert (result.final_url, result.attempts) == ("http://[127.0.0.1]/x", 1)
    else:
        assert result.final_url == url


@pytest.mark.parametrize("shape", ["header-drip", "interim-100", "tiny-chunks", "silent"])
def test_single_hop_deadline_holds_without_retries(hostile, shape):
    start = time.perf_counter()
    result = fetch_many([hostile.url(shape)], cfg(timeout_s=HOSTILE_TIMEOUT_S, retries=0))[0]
    elapsed = time.perf_counter() - start
    assert (result.status, result.attempts) == ("timeout", 1)
    assert elapsed / HOSTILE_TIMEOUT_S <= DEADLINE_MARGIN


def test_tls_handshake_that_never_comes_times_out(hostile):
    start = time.perf_counter()
    result = fetch_many([f"https://127.0.0.1:{hostile.port}/silent/"], cfg(timeout_s=HOSTILE_TIMEOUT_S))[0]
    assert result.status == "timeout"
    assert (time.perf_counter() - start) / HOSTILE_TIMEOUT_S <= DEADLINE_MARGIN


def test_gzip_bomb_is_cut_at_max_bytes_of_inflated_output(hostile):
    from tests.hostile_http import gzip_bomb

    result = fetch_one(hostile.url("gzip-bomb"))
    assert result.status == "too_large" and "inflates past max_bytes" in result.error
    assert len(gzip_bomb()) < MAX_BYTES  # on the wire it was small: only the inflated size is too large


def test_redirect_chain_of_slow_hops_ends_at_the_url_deadline(server, base):
    # Each hop answers just under timeout_s and the last one never does; retries would restart the chain.
    start = time.perf_counter()
    result = fetch_one(f"{base}/slow-hop?n=0", timeout_s=0.5, url_deadline_s=1.2, retries=2)
    elapsed = time.perf_counter() - start
    assert result.status == "timeout" and "URL deadline" in result.error
    assert result.final_url.startswith(f"{base}/slow-hop?n=")  # the hop that was running
    assert elapsed / 1.2 <= DEADLINE_MARGIN


def test_url_deadline_defaults_to_three_timeouts():
    assert FetchConfig(timeout_s=2.0).effective_url_deadline_s == 6.0
    assert FetchConfig(timeout_s=2.0, url_deadline_s=3.0).effective_url_deadline_s == 3.0


def test_stop_at_defers_what_it_could_not_try_and_never_waits_on_the_slow_host(hostile, base):
    # 6 URLs on one silent host (per-host limit 1) and 12 good ones: the budget allows ~2 silent tries.
    budget_s = 1.5
    silent = [hostile.url("silent", str(i)) for i in range(6)]
    good = [f"http://localhost:{base.rsplit(':', 1)[1]}/good.jpg?i={i}" for i in range(12)]
    start = time.perf_counter()
    with ImageFetcher(cfg(timeout_s=5.0, url_deadline_s=0.7, concurrency_per_task=4,
                          allow_private_hosts=["127.0.0.1", "localhost"]), per_host_limit=1) as fetcher:
        results = fetcher.fetch_many(silent + good, stop_at=time.monotonic() + budget_s)
    elapsed = time.perf_counter() - start
    statuses = Counter(r.status for r in results[:6])
    assert [r.status for r in results[6:]] == ["ok"] * 12  # the good host was never held up
    assert statuses["timeout"] >= 1 and statuses["deferred"] >= 3 and set(statuses) <= {"timeout", "deferred"}
    assert sum(r.attempts == 0 for r in results[:6]) >= 3  # never started; one more may be cut mid-hop
    assert elapsed / budget_s <= DEADLINE_MARGIN


@pytest.mark.parametrize("address", ["168.63.129.16", "192.0.0.192", "100.100.100.200", "169.254.0.23",
                                     "::ffff:168.63.129.16", "64:ff9b::a83f:8110", "fd00:ec2::254"])
def test_cloud_platform_endpoints_are_not_public(address):
    assert not is_public_address(address)


@pytest.mark.parametrize("url", ["http://168.63.129.16/machine?comp=goalstate", "http://192.0.0.192/opc/v2/instance/",
                                 "http://100.100.100.200/latest/meta-data/", "http://[fd00:ec2::254]/latest/"])
def test_cloud_platform_endpoints_are_blocked_before_connecting(connections, url):
    result = fetch_one(url, allow_private_hosts=[])
    assert (result.status, result.attempts) == ("blocked", 1)
    assert connections == []
