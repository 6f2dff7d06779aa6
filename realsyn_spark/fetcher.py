"""Safe, concurrent HTTP image fetcher for use inside Spark `mapInPandas` tasks.

    results = fetch_many(urls, cfg.fetch)            # one FetchResult per URL, same order, never raises

or, to keep connections and DNS answers across the batches of one task:

    with ImageFetcher(cfg.fetch) as fetcher:
        for batch in batches:
            results = fetcher.fetch_many(batch.url.tolist())

Design, and the reason for each choice:

* Standard library only (`http.client`), so each connection can be pinned to the exact IP address that
  passed the SSRF check. The Host header, TLS SNI and certificate hostname check still use the URL's
  hostname, which is what closes the DNS-rebinding hole (resolve-validate-then-resolve-again).
* SSRF policy: only http/https; every address the hostname resolves to must be globally routable (one bad
  address blocks the URL, because we cannot control which one a retry would pick). Loopback, RFC 1918,
  link-local (cloud metadata 169.254.169.254), CGNAT, multicast, reserved, unspecified, and IPv6 forms
  that embed such an IPv4 address (mapped, NAT64, 6to4, Teredo) are "blocked" before any connection is
  made, and so are the platform endpoints on public addresses in `DENIED_NETWORKS` (Azure WireServer
  168.63.129.16, Oracle Cloud metadata 192.0.0.192 in the IETF block 192.0.0.0/24). Hosts named verbatim in `cfg.allow_private_hosts` (hostname or literal IP, as written in the URL)
  skip the check; allowing "127.0.0.1" does not allow "localhost" and vice versa.
* Redirects are followed by hand (at most MAX_REDIRECTS) and every hop is parsed, resolved and validated
  again, so a public host cannot bounce us to 127.0.0.1 or the metadata service.
* Deadlines are wall-clock, whatever the server sends: each hop (connect, TLS, status line, interim 1xx
  answers, headers, body) must finish within `cfg.timeout_s`, and one URL (every hop, retry and backoff)
  within `cfg.effective_url_deadline_s` (the clock starts when its first hop gets a per-host slot). The
  socket timeout is re-armed to the time left before every read, and a watchdog thread shuts the socket
  down when the deadline passes, which also ends reads that http.client makes on its own (a status
  line or headers dripped one byte at a time, endless 100 Continue). `fetch_many(..., stop_at=)` is the
  caller's budget: URLs not started by then come back "deferred", and a hop cut by it too.
* Retries (`cfg.retries` extra attempts) only for timeouts, connection errors, 5xx and 429, with
  exponential backoff and jitter (Retry-After is honoured up to `cfg.timeout_s`). 4xx, blocked, invalid,
  too large and non-image answers are final.
* Size: a Content-Length above `cfg.max_bytes` is refused before reading; otherwise bytes are counted
  while streaming and the transfer is cut as soon as it passes the limit. A body sent with
  `Content-Encoding: gzip` / `deflate` (we ask for identity, a server may ignore that) is inflated while
  streaming with a bounded output size, so `max_bytes` caps the inflated size too; other encodings are
  `protocol_error`.
* Malformed answers (bad status line, header line too long, more than 100 headers, 101 or a body cut
  short of its Content-Length, broken chunking or gzip) are `protocol_error`; an unparseable Location is
  `invalid_url` for that hop.
* Content: the first bytes are sniffed for an image magic number (Content-Type and extension are
  ignored) so HTML error pages are dropped early; the full body then goes through
  `images.inspect_image` (header pixel check, full decode, EXIF rotation).
* Status mapping of the decode check: inspect_image "decode_error"/"empty" -> "decode_error";
  "too_many_pixels" -> "too_large" (the image is fine but too big; `error` says "pixels" and
  `image.status` is "too_many_pixels", so it can be told apart from a byte-size refusal).
* Concurrency: a thread pool of `cfg.concurrency_per_task` workers, at most `per_host_limit` requests in
  flight to one hostname, URLs interleaved by host so one big host does not idle the pool, and
  keep-alive connections reused per (scheme, host, port).

`cfg.enabled` is not looked at here: deciding whether to fetch at all is the caller's job.
"""
from __future__ import annotations

import heapq
import http.client
import ipaddress
import itertools
import random
import re
import socket
import ssl
import threading
import time
import zlib
from collections import OrderedDict, defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Literal, Optional, Union
from urllib.parse import SplitResult, quote, urljoin, urlsplit

from realsyn_spark.config import FetchConfig
from realsyn_spark.images import SNIFF_BYTES, ImageInfo, inspect_image, sniff_image_format

FetchStatus = Literal["ok", "http_error", "timeout", "too_large", "not_an_image", "decode_error", "blocked",
                      "invalid_url", "connection_error", "too_many_redirects", "protocol_error", "deferred",
                      "internal_error"]

DEFAULT_PER_HOST_LIMIT = 8  # polite to one origin, yet enough to hide ~50 ms of latency per request
MAX_REDIRECTS = 5
RETRY_BACKOFF_BASE_S = 0.25  # first retry waits 0.125-0.25 s, then 0.25-0.5 s, ...
RETRY_BACKOFF_MAX_S = 4.0
MAX_URL_LENGTH = 8192
READ_CHUNK_BYTES = 64 * 1024
DRAIN_LIMIT_BYTES = 64 * 1024  # error/redirect bodies up to this size are read so the connection is reusable
DNS_CACHE_TTL_S = 300.0
MAX_IDLE_CONNECTIONS = 64  # idle keep-alive sockets kept per fetcher, over all hosts

_ALLOWED_SCHEMES = {"http": 80, "https": 443}
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_HOSTNAME_RE = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?$")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_REQUEST_HEADERS = {"Accept": "image/avif,image/webp,image/*;q=0.9,*/*;q=0.5", "Accept-Encoding": "identity"}
# Platform endpoints that sit on publicly routable addresses, so the range checks alone let them through.
# (Siblings inside the blocked ranges need no entry: AWS/GCP/Azure/OpenStack 169.254.169.254, AWS
# fd00:ec2::254 (ULA), Tencent 169.254.0.23 (link-local), Alibaba 100.100.100.200 (CGNAT 100.64/10).)
DENIED_NETWORKS = (
    ipaddress.ip_network("168.63.129.16/32"),  # Azure WireServer / platform DNS
    ipaddress.ip_network("192.0.0.0/24"),  # IETF protocol assignments, not global; Oracle Cloud metadata .192
)
_IDENTITY_ENCODINGS = frozenset({"", "identity"})
_INFLATE_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


@dataclass
class FetchResult:
    """Outcome for one URL. `data` is set only when status is "ok".

    `final_url` is the last URL tried (after redirects); `attempts` counts tries including retries;
    `image` holds the decode check (size after EXIF rotation, format, sha256) when one was made.
    """

    url: str
    status: FetchStatus
    data: Optional[bytes] = None
    http_status: Optional[int] = None
    content_type: Optional[str] = None
    error: Optional[str] = None
    final_url: Optional[str] = None
    attempts: int = 0
    image: Optional[ImageInfo] = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class _Failure(Exception):
    """Internal: ends one attempt with a status. `retryable` says whether another attempt may help."""

    def __init__(self, status: FetchStatus, error: str, *, retryable: bool = False,
                 http_status: Optional[int] = None, retry_after_s: Optional[float] = None):
        super().__init__(error)
        self.status = status
        self.error = error
        self.retryable = retryable
        self.http_status = http_status
        self.retry_after_s = retry_after_s
        self.url: Optional[str] = None  # the redirect hop that failed, filled in by _follow_redirects


@dataclass(frozen=True)
class _Target:
    """One validated request: where to connect (pinned addresses) and what to ask for."""

    url: str
    scheme: str
    host: str  # lower-case ASCII hostname, or an IP literal without brackets
    port: int
    request_path: str
    addresses: tuple[str, ...]

    @property
    def pool_key(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


@dataclass
class _Response:
    """Internal: a finished 2xx exchange."""

    body: bytes
    http_status: int
    content_type: Optional[str]


# ----------------------------------------------------------------------------------------------------
# SSRF policy
# ----------------------------------------------------------------------------------------------------

def is_public_address(address: Union[str, ipaddress.IPv4Address, ipaddress.IPv6Address]) -> bool:
    """True when `address` is a globally routable unicast address that is safe to connect to.

    False for loopback, private, link-local, multicast, reserved, unspecified, CGNAT (100.64/10),
    `DENIED_NETWORKS` (cloud platform endpoints on public addresses),
    site-local, documentation/benchmark ranges, and IPv6 forms that embed a non-public IPv4 address
    (IPv4-mapped, NAT64 64:ff9b::/96, 6to4 2002::/16, Teredo). Unparseable input is not public.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        # ::ffff:a.b.c.d is how a dual-stack socket reaches IPv4 a.b.c.d: judge the IPv4 address alone
        # (the ::ffff:0:0/96 block itself counts as "private" in the ipaddress tables).
        return is_public_address(ip.ipv4_mapped)
    embedded = _embedded_ipv4(ip)
    if embedded is not None and not is_public_address(embedded):
        return False
    if ip.version == 4 and (ip in _CGNAT or any(ip in net for net in DENIED_NETWORKS)):
        return False
    if ip.version == 6 and ip.is_site_local:
        return False
    return not (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast
                or ip.is_reserved or ip.is_unspecified) and ip.is_global


def _embedded_ipv4(ip: Union[ipaddress.IPv4Address, ipaddress.IPv6Address]) -> Optional[ipaddress.IPv4Address]:
    """The IPv4 address a NAT64, 6to4 or Teredo IPv6 address would reach, if any."""
    if ip.version != 6:
        return None
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def _normalise_allow_list(hosts: list[str]) -> frozenset[str]:
    # Compare like with like: lower-case, no IPv6 brackets, no trailing dot, IPs in canonical form.
    return frozenset(_canonical_host(h) for h in hosts if h and h.strip())


def _canonical_host(host: str) -> str:
    host = host.strip().lower().strip("[]").rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


# ----------------------------------------------------------------------------------------------------
# URL parsing and resolution
# ----------------------------------------------------------------------------------------------------

def _parse_url(url: object) -> tuple[SplitResult, str, int]:
    """Split and sanity-check `url`; returns (parts, ASCII host, port) or raises _Failure(invalid_url)."""
    if not isinstance(url, str) or not url.strip():
        raise _Failure("invalid_url", "URL is empty or not a string")
    if len(url) > MAX_URL_LENGTH:
        raise _Failure("invalid_url", f"URL longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise _Failure("invalid_url", f"malformed URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _ALLOWED_SCHEMES:
        raise _Failure("invalid_url", f"scheme {scheme or '(none)'!r} is not http or https")
    host = _ascii_host(parts.hostname or "")
    return parts, host, port if port is not None else _ALLOWED_SCHEMES[scheme]


def _ascii_host(hostname: str) -> str:
    if not hostname:
        raise _Failure("invalid_url", "URL has no host")
    try:
        return str(ipaddress.ip_address(hostname))
    except ValueError:
        pass
    try:
        ascii_host = hostname.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise _Failure("invalid_url", f"bad hostname {hostname!r}: {exc}") from None
    if not _HOSTNAME_RE.match(ascii_host):
        raise _Failure("invalid_url", f"bad hostname {hostname!r}")
    return ascii_host


def _request_path(parts: SplitResult) -> str:
    # Percent-encode spaces and non-ASCII characters found in scraped URLs; "%" stays safe so existing
    # escapes are not double-encoded. The fragment is never sent.
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parts.query:
        path += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
    return path


class _Resolver:
    """getaddrinfo with a small TTL cache (positive and negative) shared by the fetcher's threads.

    Caching is also what makes pinning consistent: every request to a host uses addresses that passed
    the policy check, even if the DNS answer changes meanwhile.
    """

    def __init__(self, ttl_s: float = DNS_CACHE_TTL_S):
        self._ttl_s = ttl_s
        self._cache: dict[tuple[str, int], tuple[float, Union[tuple[str, ...], str]]] = {}
        self._lock = threading.Lock()

    def resolve(self, host: str, port: int) -> tuple[str, ...]:
        """Addresses for host (IP literals without any lookup); raises _Failure(connection_error)."""
        try:
            return (str(ipaddress.ip_address(host)),)
        except ValueError:
            pass
        key = (host, port)
        with self._lock:
            cached = self._cache.get(key)
        if cached is None or cached[0] < time.monotonic():
            cached = (time.monotonic() + self._ttl_s, self._lookup(host, port))
            with self._lock:
                self._cache[key] = cached
        answer = cached[1]
        if isinstance(answer, str):
            # Cached failure (no such name): final for this URL, a retry would not make the name appear.
            raise _Failure("connection_error", answer)
        return answer

    @staticmethod
    def _lookup(host: str, port: int) -> Union[tuple[str, ...], str]:
        """The addresses, or an error message to cache. A temporary resolver failure is not cached."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            if exc.errno == socket.EAI_AGAIN:
                raise _Failure("connection_error", f"DNS lookup for {host!r} failed for now: {exc}",
                               retryable=True) from None
            return f"DNS lookup failed for {host!r}: {exc}"
        except (OSError, UnicodeError) as exc:
            return f"DNS lookup failed for {host!r}: {exc}"
        addresses = tuple(dict.fromkeys(info[4][0] for info in infos))  # de-duplicated, order kept
        return addresses or f"DNS lookup for {host!r} returned no addresses"


# ----------------------------------------------------------------------------------------------------
# Pinned connections and the connection pool
# ----------------------------------------------------------------------------------------------------

class _InterimSkippingResponse(http.client.HTTPResponse):
    """Skips every interim 1xx answer before the final one.

    http.client skips only "100 Continue" and hands back e.g. "103 Early Hints" as if it were final, which
    leaves the real answer unread on the socket. Endless interim answers are ended by the watchdog; each
    one's headers are bounded by http.client (100 headers, 64 KiB a line). 101 is not an answer to a GET.
    """

    def _read_status(self):
        while True:
            version, status, reason = super()._read_status()
            if status == 101:
                raise http.client.HTTPException("101 Switching Protocols in answer to a GET")
            if not 100 <= status < 200:
                return version, status, reason
            http.client.parse_headers(self.fp)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP connection that talks to pre-validated IPs while sending the URL's hostname as Host."""

    response_class = _InterimSkippingResponse

    def __init__(self, host: str, port: int, addresses: tuple[str, ...], timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._addresses = addresses

    def connect(self) -> None:
        self.sock = _connect_any(self._addresses, self.port, self.timeout)


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """HTTPS over a pinned IP: SNI and certificate verification use the URL's hostname."""

    default_port = 443

    def __init__(self, host: str, port: int, addresses: tuple[str, ...], timeout: float,
                 context: ssl.SSLContext):
        super().__init__(host, port, addresses, timeout)
        self._context = context

    def connect(self) -> None:
        super().connect()
        # Handshake after self.sock is the TLS socket, so the watchdog can shut down a dripped handshake.
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host, do_handshake_on_connect=False)
        self.sock.do_handshake()


def _connect_any(addresses: tuple[str, ...], port: int, timeout: float) -> socket.socket:
    """Connect to the first reachable address (e.g. "localhost" may list ::1 before 127.0.0.1), all
    attempts together within `timeout`."""
    last_error: Optional[OSError] = None
    deadline = time.monotonic() + timeout
    for address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("connect deadline exceeded")
        try:
            sock = socket.create_connection((address, port), timeout=remaining)
        except OSError as exc:
            last_error = exc
            continue
        # Headers are written in one go, but Nagle plus delayed ACK can still add ~40 ms per request.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise last_error or OSError("no address to connect to")


class _ConnectionPool:
    """Idle keep-alive connections per (scheme, host, port).

    At most `max_per_key` idle connections per origin and `max_total` overall: a task that touches
    thousands of hosts must not keep thousands of sockets open (file-descriptor limits), so the origin
    used least recently loses its idle connections first.
    """

    def __init__(self, max_per_key: int, max_total: int = MAX_IDLE_CONNECTIONS):
        self._max_per_key = max_per_key
        self._max_total = max_total
        self._idle: OrderedDict[tuple[str, str, int], list[http.client.HTTPConnection]] = OrderedDict()
        self._count = 0
        self._lock = threading.Lock()

    def take(self, key: tuple[str, str, int]) -> Optional[http.client.HTTPConnection]:
        with self._lock:
            idle = self._idle.get(key)
            if not idle:
                return None
            conn = idle.pop()
            if not idle:
                del self._idle[key]
            self._count -= 1
            return conn

    def give_back(self, key: tuple[str, str, int], conn: http.client.HTTPConnection) -> None:
        evicted: list[http.client.HTTPConnection] = []
        with self._lock:
            idle = self._idle.setdefault(key, [])
            self._idle.move_to_end(key)
            if len(idle) >= self._max_per_key:
                evicted.append(conn)
            else:
                idle.append(conn)
                self._count += 1
            while self._count > self._max_total:
                evicted.append(self._pop_least_recent())
        for stale in evicted:
            stale.close()  # outside the lock: closing a TLS socket can block briefly

    def _pop_least_recent(self) -> http.client.HTTPConnection:
        key, idle = next(iter(self._idle.items()))
        conn = idle.pop(0)
        if not idle:
            del self._idle[key]
        self._count -= 1
        return conn

    def close_all(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
            self._count = 0
        for conn in conns:
            conn.close()


class _HostLimiter:
    """At most `limit` requests in flight per hostname.

    Semaphores are created on demand and dropped when no thread uses them, so memory does not grow with
    the number of distinct hosts a long task has seen.
    """

    def __init__(self, limit: int):
        self._limit = limit
        self._slots: dict[str, list] = {}  # host -> [semaphore, number of threads holding or waiting]
        self._lock = threading.Lock()

    @contextmanager
    def slot(self, host: str) -> Iterator[None]:
        with self._lock:
            entry = self._slots.setdefault(host, [threading.BoundedSemaphore(self._limit), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._slots[host]


class _Watch:
    """One exchange under the watchdog: the connection whose socket is shut down at the deadline."""

    __slots__ = ("conn", "active", "fired")

    def __init__(self):
        self.conn: Optional[http.client.HTTPConnection] = None
        self.active = True
        self.fired = False


class _Watchdog:
    """One daemon thread per fetcher that ends exchanges past their wall-clock deadline.

    Socket timeouts bound each read, not the exchange: http.client reads the status line and headers by
    itself, one recv per byte a server drips. Shutting the socket down makes any blocked or later read
    return at once; the fetcher then sees `fired` and reports a timeout, whatever http.client made of
    the cut stream. Fire and cancel take the same lock, so a socket that went back to the pool is never
    touched.
    """

    def __init__(self):
        self._heap: list[tuple[float, int, _Watch]] = []
        self._cond = threading.Condition()
        self._sequence = itertools.count()
        self._thread: Optional[threading.Thread] = None
        self._closed = False

    def watch(self, deadline: float) -> _Watch:
        watch = _Watch()
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._sequence), watch))
            if self._thread is None or not self._thread.is_alive():
                self._closed = False
                self._thread = threading.Thread(target=self._run, name="fetch-watchdog", daemon=True)
                self._thread.start()
            if self._heap[0][2] is watch:  # only an earlier deadline changes how long the thread sleeps
                self._cond.notify()
        return watch

    def cancel(self, watch: _Watch) -> bool:
        """Stop watching; True when the deadline had already fired."""
        with self._cond:
            watch.active = False  # dropped from the heap lazily, when it comes to the top
            return watch.fired

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                while self._heap and not self._heap[0][2].active:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait(1.0)
                    continue
                wait_s = self._heap[0][0] - time.monotonic()
                if wait_s > 0:
                    self._cond.wait(wait_s)
                    continue
                self._fire(heapq.heappop(self._heap)[2])

    @staticmethod
    def _fire(watch: _Watch) -> None:
        watch.fired, watch.active = True, False
        sock = watch.conn.sock if watch.conn is not None else None
        if sock is not None:
            try:
                # The base-class call: SSLSocket.shutdown would also drop its SSL object under the reader.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass  # already closed or never connected


def _arm(conn: http.client.HTTPConnection, deadline: float) -> None:
    """Set the socket timeout to the time left before `deadline` (raises TimeoutError when none is left)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("deadline exceeded")
    conn.timeout = remaining
    if conn.sock is not None:
        conn.sock.settimeout(remaining)


# ----------------------------------------------------------------------------------------------------
# The fetcher
# ----------------------------------------------------------------------------------------------------

class _Clock:
    """The limits one URL runs under: per hop, per URL (started by its first hop) and the caller's stop_at."""

    def __init__(self, cfg: FetchConfig, stop_at: Optional[float]):
        self.cfg = cfg
        self.stop_at = stop_at
        self.url_deadline: Optional[float] = None

    def hop(self) -> tuple[float, str]:
        """(deadline, which limit it is: "hop", "url" or "task") for a hop starting now."""
        now = time.monotonic()
        if self.url_deadline is None:
            self.url_deadline = now + self.cfg.effective_url_deadline_s
        limits = [(now + self.cfg.timeout_s, "hop"), (self.url_deadline, "url")]
        if self.stop_at is not None:
            limits.append((self.stop_at, "task"))
        return min(limits)

    def allows_sleep(self, seconds: float) -> bool:
        wake = time.monotonic() + seconds
        return all(limit is None or wake < limit for limit in (self.url_deadline, self.stop_at))

    def failure(self, limit: str) -> "_Failure":
        if limit == "task":
            return _Failure("deferred", "the task's time budget ran out during this URL")
        if limit == "url":
            return _Failure("timeout", f"URL deadline of {self.cfg.effective_url_deadline_s} s (all hops and "
                                       "retries) exceeded")
        return _Failure("timeout", f"no complete answer within {self.cfg.timeout_s} s", retryable=True)


class _Scheduler:
    """Hands URL indices to workers, round-robin over first-hop hosts, never more than `per_host_limit`
    of one host in flight: a worker skips to another host instead of queueing behind a slow one, so
    one hostile host holds at most `per_host_limit` workers. Nothing is handed out after `stop_at`."""

    def __init__(self, urls: list, per_host_limit: int):
        self._queues: OrderedDict[str, deque] = OrderedDict()
        for index, url in enumerate(urls):
            self._queues.setdefault(_host_of(url), deque()).append(index)
        self._limit = per_host_limit
        self._in_flight: dict[str, int] = defaultdict(int)
        self._cond = threading.Condition()

    def next(self, stop_at: Optional[float]) -> Optional[tuple[int, str]]:
        with self._cond:
            while self._queues:
                for host in list(self._queues):
                    if self._in_flight[host] < self._limit:
                        queue = self._queues.pop(host)
                        index = queue.popleft()
                        if queue:
                            self._queues[host] = queue  # to the back: round-robin
                        self._in_flight[host] += 1
                        return index, host
                wait_s = None if stop_at is None else stop_at - time.monotonic()
                if wait_s is not None and wait_s <= 0:
                    return None
                self._cond.wait(wait_s)
            return None

    def done(self, host: str) -> None:
        with self._cond:
            self._in_flight[host] -= 1
            self._cond.notify_all()


class ImageFetcher:
    """Reusable fetcher: holds the connection pool, DNS cache and per-host limits between batches.

    Thread-safe. Call close() (or use it as a context manager) to drop idle connections.
    """

    def __init__(self, cfg: FetchConfig, *, per_host_limit: int = DEFAULT_PER_HOST_LIMIT,
                 backoff_base_s: float = RETRY_BACKOFF_BASE_S, ssl_context: Optional[ssl.SSLContext] = None):
        if per_host_limit < 1:
            raise ValueError("per_host_limit must be at least 1")
        self.cfg = cfg
        self.per_host_limit = per_host_limit
        self.backoff_base_s = backoff_base_s
        self._allowed_hosts = _normalise_allow_list(cfg.allow_private_hosts)
        self._ssl_context = ssl_context  # created lazily: loading the CA bundle costs ~10 ms
        self._ssl_lock = threading.Lock()
        self._resolver = _Resolver()
        self._pool = _ConnectionPool(max_per_key=per_host_limit)
        self._limiter = _HostLimiter(per_host_limit)
        self._watchdog = _Watchdog()

    def __enter__(self) -> "ImageFetcher":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._pool.close_all()
        self._watchdog.close()

    def fetch_many(self, urls: list[str], *, stop_at: Optional[float] = None) -> list[FetchResult]:
        """Fetch every URL concurrently; returns one FetchResult per URL in input order. Never raises.

        `stop_at` (a time.monotonic() value) is the caller's budget: URLs not started by then, and hops
        still running then, come back as "deferred" (not tried; fetch them another time).
        """
        urls = list(urls)
        if not urls:
            return []
        results: list[Optional[FetchResult]] = [None] * len(urls)
        scheduler = _Scheduler(urls, self.per_host_limit)

        def work() -> None:
            while (picked := scheduler.next(stop_at)) is not None:
                index, host = picked
                try:
                    results[index] = self.fetch(urls[index], stop_at=stop_at)
                finally:
                    scheduler.done(host)

        workers = min(self.cfg.concurrency_per_task, len(urls))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool:
            for future in [pool.submit(work) for _ in range(workers)]:
                future.result()
        return [result or _deferred(url) for url, result in zip(urls, results)]

    def fetch(self, url: str, *, stop_at: Optional[float] = None) -> FetchResult:
        """Fetch one URL with retries, redirects, SSRF checks and the decode check. Never raises."""
        if stop_at is not None and time.monotonic() >= stop_at:
            return _deferred(url)
        try:
            return self._fetch_with_retries(url, _Clock(self.cfg, stop_at))
        except Exception as exc:  # noqa: BLE001 - the contract is one result per URL, whatever happens
            # A bug in the fetcher, not a server's doing: every known response shape has its own status.
            return FetchResult(url=str(url), status="internal_error", final_url=str(url),
                               error=f"fetcher bug, please report: {type(exc).__name__}: {exc}")

    # -- attempts -------------------------------------------------------------------------------------

    def _fetch_with_retries(self, url: str, clock: _Clock) -> FetchResult:
        attempt = 0
        while True:
            attempt += 1
            try:
                final_url, response = self._follow_redirects(url, clock)
            except _Failure as failure:
                if failure.retryable and attempt <= self.cfg.retries:
                    delay = self._backoff_s(attempt, failure.retry_after_s)
                    if clock.allows_sleep(delay):
                        time.sleep(delay)
                        continue
                return FetchResult(url=url, status=failure.status, http_status=failure.http_status,
                                   error=failure.error, final_url=failure.url or url, attempts=attempt)
            return self._check_image(url, final_url, response, attempt)

    def _backoff_s(self, attempt: int, retry_after_s: Optional[float]) -> float:
        """Exponential backoff with "equal jitter" (half fixed, half random), so retries of many URLs
        that failed together do not hit the server again in lock-step."""
        ceiling = min(RETRY_BACKOFF_MAX_S, self.backoff_base_s * 2 ** (attempt - 1))
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.cfg.timeout_s))
        return delay

    def _check_image(self, url: str, final_url: str, response: _Response, attempts: int) -> FetchResult:
        info = inspect_image(response.body, self.cfg.max_pixels)
        result = FetchResult(url=url, status="ok", http_status=response.http_status,
                             content_type=response.content_type, final_url=final_url, attempts=attempts,
                             image=info)
        if info.status == "ok":
            result.data = response.body
        elif info.status == "too_many_pixels":
            result.status, result.error = "too_large", f"too many pixels: {info.error}"
        else:
            result.status, result.error = "decode_error", info.error
        return result

    # -- redirects and SSRF validation ----------------------------------------------------------------

    def _follow_redirects(self, url: str, clock: _Clock) -> tuple[str, _Response]:
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            try:
                target = self._validate(current)
                with self._limiter.slot(target.host):
                    outcome = self._exchange(target, clock)
            except _Failure as failure:
                failure.url = current  # report the hop that failed as final_url
                raise
            if isinstance(outcome, _Response):
                return current, outcome
            current = _redirect_target(current, outcome)
        failure = _Failure("too_many_redirects", f"more than {MAX_REDIRECTS} redirects")
        failure.url = current
        raise failure

    def _validate(self, url: str) -> _Target:
        """Parse, resolve and policy-check one hop. Nothing is sent to the network for a blocked URL
        (IP literals and /etc/hosts names are resolved locally; a DNS query reveals only the name)."""
        parts, host, port = _parse_url(url)
        addresses = self._resolver.resolve(host, port)
        if _canonical_host(host) not in self._allowed_hosts:
            bad = [a for a in addresses if not is_public_address(a)]
            if bad:
                raise _Failure("blocked", f"{host} resolves to non-public address {bad[0]}")
        return _Target(url=url, scheme=parts.scheme.lower(), host=host, port=port,
                       request_path=_request_path(parts), addresses=addresses)

    # -- one HTTP exchange ----------------------------------------------------------------------------

    def _exchange(self, target: _Target, clock: _Clock) -> Union[_Response, str]:
        """One request on a pooled or new connection: a _Response for 2xx, the Location for a redirect,
        or _Failure. The watchdog ends it at the deadline; socket and protocol errors are mapped by
        _classify."""
        deadline, limit = clock.hop()
        if deadline <= time.monotonic():
            raise clock.failure(limit)
        watch = self._watchdog.watch(deadline)
        response: Optional[http.client.HTTPResponse] = None
        try:
            response = self._send(target, deadline, watch)
            outcome = self._handle_response(watch.conn, response, deadline)
        except Exception as exc:
            if self._watchdog.cancel(watch) or isinstance(exc, TimeoutError):
                raise clock.failure(limit) from None
            raise exc if isinstance(exc, _Failure) else _classify(exc) from None
        finally:
            fired = self._watchdog.cancel(watch)
            if watch.conn is not None:
                self._settle(target, watch.conn, None if fired else response)
        if fired:  # the stream was cut: whatever http.client made of it is not the server's answer
            raise clock.failure(limit)
        return outcome

    def _settle(self, target: _Target, conn: http.client.HTTPConnection,
                response: Optional[http.client.HTTPResponse]) -> None:
        """Pool the connection if its response was read to the end and keep-alive holds; else close it
        (a half-read body, e.g. after too_large or not_an_image, leaves the stream unusable)."""
        if response is not None and response.isclosed() and not response.will_close and conn.sock is not None:
            self._pool.give_back(target.pool_key, conn)
        else:
            conn.close()

    def _send(self, target: _Target, deadline: float, watch: _Watch) -> http.client.HTTPResponse:
        """Send the request, preferring an idle pooled connection; `watch.conn` is the connection used
        (the caller settles it)."""
        conn = self._pool.take(target.pool_key)
        if conn is not None:
            watch.conn = conn
            try:
                return self._request(conn, target, deadline, self.cfg.user_agent)
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                # The server closed the idle keep-alive connection; nothing was processed, so retrying
                # at once on a fresh connection is safe and is not counted as an attempt.
                conn.close()
                if watch.fired:
                    raise
        watch.conn = self._new_connection(target, deadline)
        return self._request(watch.conn, target, deadline, self.cfg.user_agent)

    def _new_connection(self, target: _Target, deadline: float) -> http.client.HTTPConnection:
        timeout = max(deadline - time.monotonic(), 0.001)
        if target.scheme == "https":
            return _PinnedHTTPSConnection(target.host, target.port, target.addresses, timeout, self._tls())
        return _PinnedHTTPConnection(target.host, target.port, target.addresses, timeout)

    def _tls(self) -> ssl.SSLContext:
        with self._ssl_lock:
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            return self._ssl_context

    @staticmethod
    def _request(conn: http.client.HTTPConnection, target: _Target, deadline: float,
                 user_agent: str) -> http.client.HTTPResponse:
        _arm(conn, deadline)
        conn.request("GET", target.request_path, headers={**_REQUEST_HEADERS, "User-Agent": user_agent})
        _arm(conn, deadline)
        return conn.getresponse()

    def _handle_response(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse,
                         deadline: float) -> Union[_Response, str]:
        status = response.status
        if 200 <= status < 300:
            body = self._read_image_body(conn, response, deadline)
            return _Response(body=body, http_status=status, content_type=response.getheader("Content-Type"))
        location = response.getheader("Location")
        self._drain(conn, response, deadline)
        if status in _REDIRECT_CODES and location:
            return location.strip()
        retryable = status >= 500 or status == 429
        raise _Failure("http_error", f"HTTP {status} {response.reason}", http_status=status,
                       retryable=retryable, retry_after_s=_retry_after_s(response) if retryable else None)

    def _read_image_body(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse,
                         deadline: float) -> bytes:
        """Stream the body under the deadline and byte limit (on the wire and once inflated), sniffing
        the first bytes for an image."""
        max_bytes = self.cfg.max_bytes
        if response.length is not None and response.length > max_bytes:
            raise _Failure("too_large", f"Content-Length {response.length} > max_bytes {max_bytes}",
                           http_status=response.status)
        decoders = _decoders(response.getheader("Content-Encoding"), max_bytes, response.status)
        chunks: list[bytes] = []
        wire = received = 0
        sniffed = False
        while True:
            _arm(conn, deadline)
            chunk = response.read1(READ_CHUNK_BYTES)  # one recv at most, so the deadline is re-checked
            if not chunk:
                break
            wire += len(chunk)
            if wire > max_bytes:
                raise _Failure("too_large", f"body exceeds max_bytes {max_bytes}", http_status=response.status)
            for decoder in decoders:
                chunk = decoder.feed(chunk)
            chunks.append(chunk)
            received += len(chunk)
            if received > max_bytes:
                raise _Failure("too_large", f"body exceeds max_bytes {max_bytes}", http_status=response.status)
            if not sniffed and received >= SNIFF_BYTES:
                self._require_image_magic(b"".join(chunks), response.status)
                sniffed = True
        if response.length:  # read1 reports the early end of a Content-Length body as a plain EOF
            raise _Failure("protocol_error", f"body ended {response.length} bytes short of its Content-Length",
                           http_status=response.status, retryable=True)
        for decoder in decoders:
            decoder.finish()
        body = b"".join(chunks)
        if not sniffed:
            self._require_image_magic(body, response.status)
        if not response.isclosed():
            response.read()  # zero bytes left: lets http.client mark the exchange complete for reuse
        return body

    @staticmethod
    def _require_image_magic(head: bytes, http_status: int) -> None:
        if sniff_image_format(head[:SNIFF_BYTES]) is None:
            raise _Failure("not_an_image", "body does not start with an image signature" if head else "empty body",
                           http_status=http_status)

    @staticmethod
    def _drain(conn: http.client.HTTPConnection, response: http.client.HTTPResponse, deadline: float) -> None:
        """Read a small error/redirect body so the connection can be reused; give up on big ones."""
        received = 0
        while received <= DRAIN_LIMIT_BYTES:
            _arm(conn, deadline)
            chunk = response.read1(READ_CHUNK_BYTES)
            if not chunk:
                if not response.isclosed():
                    response.read()
                return
            received += len(chunk)


def _deferred(url: object) -> FetchResult:
    return FetchResult(url=str(url), status="deferred", final_url=str(url), attempts=0,
                       error="not tried: the task's time budget ran out first")


def _redirect_target(current: str, location: str) -> str:
    try:
        return urljoin(current, location)
    except ValueError as exc:  # e.g. "http://[127.0.0.1]/x": brackets around an IPv4 address
        failure = _Failure("invalid_url", f"malformed Location {location[:200]!r}: {exc}")
        failure.url = location
        raise failure from None


def _classify(exc: Exception) -> _Failure:
    """Socket and http.client errors of one exchange (the deadline was not reached) -> a status."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _Failure("connection_error", f"TLS certificate rejected: {exc.verify_message}")
    if isinstance(exc, http.client.RemoteDisconnected):  # closed before any status line: a network fault
        return _Failure("connection_error", f"{type(exc).__name__}: {exc}", retryable=True)
    if isinstance(exc, http.client.IncompleteRead):  # body or chunk cut short of its declared length
        return _Failure("protocol_error", f"body ended early: {exc!r}"[:300], retryable=True)
    if isinstance(exc, http.client.HTTPException):  # bad status line, header line or count, 101, ...
        return _Failure("protocol_error", f"{type(exc).__name__}: {exc}"[:300])
    if isinstance(exc, OSError):
        return _Failure("connection_error", f"{type(exc).__name__}: {exc}", retryable=True)
    raise exc  # not a server's doing: fetch() reports it as internal_error


class _Inflater:
    """One Content-Encoding layer (gzip, x-gzip, deflate) inflated as it streams, never more than `cap`
    bytes out: zlib is asked for at most cap + 1 bytes, so a bomb costs cap bytes of memory, not GBs."""

    def __init__(self, encoding: str, cap: int, http_status: int):
        self.encoding = encoding
        self._cap = cap
        self._http_status = http_status
        self._wbits = _INFLATE_WBITS[encoding]
        self._zlib = zlib.decompressobj(self._wbits)
        self._started = False
        self._total = 0

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        while data:
            if self._zlib.eof:
                if self.encoding == "deflate":
                    break  # a deflate stream is one stream: ignore trailing bytes
                self._zlib = zlib.decompressobj(self._wbits)  # next gzip member
            try:
                piece = self._zlib.decompress(data, self._cap - self._total + 1)
            except zlib.error as exc:
                if self.encoding == "deflate" and not self._started:
                    self._wbits = -zlib.MAX_WBITS  # many servers send raw deflate without the zlib header
                    self._zlib = zlib.decompressobj(self._wbits)
                    self._started = True
                    continue
                raise _Failure("protocol_error", f"corrupt {self.encoding} body: {exc}",
                               http_status=self._http_status) from None
            self._started = True
            self._total += len(piece)
            out.append(piece)
            if self._total > self._cap:
                raise _Failure("too_large", f"{self.encoding} body inflates past max_bytes {self._cap}",
                               http_status=self._http_status)
            data = self._zlib.unused_data if self._zlib.eof else self._zlib.unconsumed_tail
        return b"".join(out)

    def finish(self) -> None:
        if self._started and not self._zlib.eof:
            raise _Failure("protocol_error", f"{self.encoding} body is truncated", http_status=self._http_status)


def _decoders(header: Optional[str], cap: int, http_status: int) -> list[_Inflater]:
    """Inflaters for a Content-Encoding header, in decoding order (the last encoding applied first)."""
    encodings = [e.strip().lower() for e in (header or "").split(",")]
    encodings = [e for e in encodings if e not in _IDENTITY_ENCODINGS]
    unknown = [e for e in encodings if e not in _INFLATE_WBITS]
    if unknown:
        raise _Failure("protocol_error", f"unsupported Content-Encoding {header!r} (we ask for identity)",
                       http_status=http_status)
    return [_Inflater(e, cap, http_status) for e in reversed(encodings)]


def _retry_after_s(response: http.client.HTTPResponse) -> Optional[float]:
    value = (response.getheader("Retry-After") or "").strip()
    return float(value) if value.isdigit() else None  # the HTTP-date form is rare for images; ignored


def _host_of(url: object) -> str:
    try:
        return (urlsplit(url).hostname or "") if isinstance(url, str) else ""
    except ValueError:
        return ""


def fetch_many(urls: list[str], cfg: FetchConfig, *, per_host_limit: int = DEFAULT_PER_HOST_LIMIT,
               backoff_base_s: float = RETRY_BACKOFF_BASE_S,
               ssl_context: Optional[ssl.SSLContext] = None) -> list[FetchResult]:
    """Fetch `urls` with a one-off ImageFetcher; one FetchResult per URL, in input order. Never raises
    for bad URLs or bad servers. See the module docstring for the policy details."""
    with ImageFetcher(cfg, per_host_limit=per_host_limit, backoff_base_s=backoff_base_s,
                      ssl_context=ssl_context) as fetcher:
        return fetcher.fetch_many(urls)
