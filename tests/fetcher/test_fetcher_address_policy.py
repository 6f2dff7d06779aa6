"""The fetcher's address policy (SSRF; local server, faked DNS, no network): private, special and cloud
metadata addresses are refused before connecting, also after a redirect; the allow-list matches the
host as written; a validated DNS answer is pinned for the connection and not re-resolved.
"""
from __future__ import annotations

import time

import pytest

from realsyn_spark.fetcher import fetch_many, is_public_address
from tests.fetcher_harness import (cfg, fetch_one)


# -- redirects to refused addresses --------------------------------------------------------------------

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
