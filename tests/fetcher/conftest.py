"""Fixtures of the fetcher tests: every test here runs with fake DNS and connections held to loopback
(autouse), and gets the local server of its module (`http_server`, reset per test as `server`, `base` its URL)."""
from __future__ import annotations

import pytest

from tests.fetcher_harness import base_url, fake_dns, loopback_only, reset, running, start_server


@pytest.fixture(autouse=True)
def offline_dns(monkeypatch):
    return fake_dns(monkeypatch)


@pytest.fixture(autouse=True)
def connections(monkeypatch):
    return loopback_only(monkeypatch)


@pytest.fixture(scope="module")
def http_server():
    with running(start_server()) as served:
        yield served


@pytest.fixture
def server(http_server):
    return reset(http_server)


@pytest.fixture
def base(server) -> str:
    return base_url(server)
