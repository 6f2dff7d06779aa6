"""fetch_many's HTTP behaviour (local servers, no network): timeouts, retries and redirects; concurrency,
keep-alive and result order; and hostile servers (tests/hostile_http.py), each held to its wall-clock
deadline with one status per malformed shape.
"""
from __future__ import annotations

import socket
import time
from collections import Counter

import pytest

from realsyn_spark.config import FetchConfig
from realsyn_spark.fetcher import FetchResult, ImageFetcher, _ConnectionPool, fetch_many
from tests.fetcher_harness import (JPEG, MAX_BYTES, cfg, fetch_one)


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
