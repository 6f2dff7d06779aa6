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
  made. Hosts named verbatim in `cfg.allow_private_hosts` (hostname or literal IP, as written in the URL)
  skip the check; allowing "127.0.0.1" does not allow "localhost" and vice versa.
* Redirects are followed by hand (at most MAX_REDIRECTS) and every hop is parsed, resolved and validated
  again, so a public host cannot bounce us to 127.0.0.1 or the metadata service.
* Timeouts: each request hop (connect, headers and body together) must finish within `cfg.timeout_s`;
  the socket timeout is re-armed to the time left before every read, so a server that drips bytes
  cannot stretch the body past the deadline. Waiting for a per-host slot does not count.
* Retries (`cfg.retries` extra attempts) only for timeouts, connection errors, 5xx and 429, with
  exponential backoff and jitter (Retry-After is honoured up to `cfg.timeout_s`). 4xx, blocked, invalid,
  too large and non-image answers are final.
* Size: a Content-Length above `cfg.max_bytes` is refused before reading; otherwise bytes are counted
  while streaming and the transfer is cut as soon as it passes the limit.
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

import http.client
import ipaddress
import random
import re
import socket
import ssl
import threading
import time
from collections import OrderedDict, defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Literal, Optional, Union
from urllib.parse import SplitResult, quote, urljoin, urlsplit

from realsyn_spark.config import FetchConfig
from realsyn_spark.images import SNIFF_BYTES, ImageInfo, inspect_image, sniff_image_format

FetchStatus = Literal["ok", "http_error", "timeout", "too_large", "not_an_image", "decode_error", "blocked",
                      "invalid_url", "connection_error", "too_many_redirects"]

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
_REQUEST_HEADERS = {"Accept": "image/avif,image/webp,image/*;q=0.9,*/*;q=0.5"}


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
    if ip.version == 4 and ip in _CGNAT:
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

class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP connection that talks to pre-validated IPs while sending the URL's hostname as Host."""

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
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)


def _connect_any(addresses: tuple[str, ...], port: int, timeout: float) -> socket.socket:
    """Connect to the first reachable address (e.g. "localhost" may list ::1 before 127.0.0.1)."""
    last_error: Optional[OSError] = None
    for address in addresses:
        try:
            sock = socket.create_connection((address, port), timeout=timeout)
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

    def __enter__(self) -> "ImageFetcher":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._pool.close_all()

    def fetch_many(self, urls: list[str]) -> list[FetchResult]:
        """Fetch every URL concurrently; returns one FetchResult per URL in input order. Never raises."""
        urls = list(urls)
        if not urls:
            return []
        results: list[Optional[FetchResult]] = [None] * len(urls)
        workers = min(self.cfg.concurrency_per_task, len(urls))

        def run(index: int) -> None:
            results[index] = self.fetch(urls[index])

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool:
            list(pool.map(run, _interleave_by_host(urls)))
        return results  # type: ignore[return-value]  # every slot was filled by run()

    def fetch(self, url: str) -> FetchResult:
        """Fetch one URL with retries, redirects, SSRF checks and the decode check. Never raises."""
        try:
            return self._fetch_with_retries(url)
        except Exception as exc:  # noqa: BLE001 - the contract is one result per URL, whatever happens
            return FetchResult(url=str(url), status="connection_error", final_url=str(url),
                               error=f"unexpected {type(exc).__name__}: {exc}")

    # -- attempts -------------------------------------------------------------------------------------

    def _fetch_with_retries(self, url: str) -> FetchResult:
        attempt = 0
        while True:
            attempt += 1
            try:
                final_url, response = self._follow_redirects(url)
            except _Failure as failure:
                if failure.retryable and attempt <= self.cfg.retries:
                    time.sleep(self._backoff_s(attempt, failure.retry_after_s))
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

    def _follow_redirects(self, url: str) -> tuple[str, _Response]:
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            try:
                target = self._validate(current)
                with self._limiter.slot(target.host):
                    outcome = self._exchange(target)
            except _Failure as failure:
                failure.url = current  # report the hop that failed as final_url
                raise
            if isinstance(outcome, _Response):
                return current, outcome
            current = urljoin(current, outcome)
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

    def _exchange(self, target: _Target) -> Union[_Response, str]:
        """One request on a pooled or new connection: a _Response for 2xx, the Location for a redirect,
        or _Failure. Maps socket/protocol errors to timeout / connection_error."""
        deadline = time.monotonic() + self.cfg.timeout_s
        conn: Optional[http.client.HTTPConnection] = None
        response: Optional[http.client.HTTPResponse] = None
        try:
            conn, response = self._send(target, deadline)
            return self._handle_response(conn, response, deadline)
        except TimeoutError:
            raise _Failure("timeout", f"no complete answer within {self.cfg.timeout_s} s",
                           retryable=True) from None
        except ssl.SSLCertVerificationError as exc:
            raise _Failure("connection_error", f"TLS certificate rejected: {exc.verify_message}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise _Failure("connection_error", f"{type(exc).__name__}: {exc}", retryable=True) from None
        finally:
            if conn is not None:
                self._settle(target, conn, response)

    def _settle(self, target: _Target, conn: http.client.HTTPConnection,
                response: Optional[http.client.HTTPResponse]) -> None:
        """Pool the connection if its response was read to the end and keep-alive holds; else close it
        (a half-read body, e.g. after too_large or not_an_image, leaves the stream unusable)."""
        if response is not None and response.isclosed() and not response.will_close and conn.sock is not None:
            self._pool.give_back(target.pool_key, conn)
        else:
            conn.close()

    def _send(self, target: _Target, deadline: float) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send the request, preferring an idle pooled connection; the caller owns the returned connection."""
        conn = self._pool.take(target.pool_key)
        if conn is not None:
            try:
                return conn, self._request(conn, target, deadline, self.cfg.user_agent)
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                # The server closed the idle keep-alive connection; nothing was processed, so retrying
                # at once on a fresh connection is safe and is not counted as an attempt.
                conn.close()
            except BaseException:
                conn.close()
                raise
        conn = self._new_connection(target, deadline)
        try:
            return conn, self._request(conn, target, deadline, self.cfg.user_agent)
        except BaseException:
            conn.close()
            raise

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
        """Stream the body under the deadline and byte limit, sniffing the first bytes for an image."""
        max_bytes = self.cfg.max_bytes
        if response.length is not None and response.length > max_bytes:
            raise _Failure("too_large", f"Content-Length {response.length} > max_bytes {max_bytes}",
                           http_status=response.status)
        chunks: list[bytes] = []
        received = 0
        sniffed = False
        while True:
            _arm(conn, deadline)
            chunk = response.read1(READ_CHUNK_BYTES)  # one recv at most, so the deadline is re-checked
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
            if received > max_bytes:
                raise _Failure("too_large", f"body exceeds max_bytes {max_bytes}", http_status=response.status)
            if not sniffed and received >= SNIFF_BYTES:
                self._require_image_magic(b"".join(chunks), response.status)
                sniffed = True
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


def _retry_after_s(response: http.client.HTTPResponse) -> Optional[float]:
    value = (response.getheader("Retry-After") or "").strip()
    return float(value) if value.isdigit() else None  # the HTTP-date form is rare for images; ignored


def _interleave_by_host(urls: list[str]) -> list[int]:
    """Indices of `urls` in round-robin order over hosts, so that workers waiting on one host's
    per-host limit do not hold up URLs of other hosts queued behind them."""
    by_host: dict[str, deque] = defaultdict(deque)
    for index, url in enumerate(urls):
        by_host[_host_of(url)].append(index)
    queues = list(by_host.values())
    order: list[int] = []
    while queues:
        order.extend(queue.popleft() for queue in queues)
        queues = [queue for queue in queues if queue]
    return order


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
