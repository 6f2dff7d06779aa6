"""HTTPS (local TLS server with a throw-away certificate, no network): the connection is pinned to the
validated address while SNI and certificate checks use the host name.
"""
from __future__ import annotations

import shutil
import ssl
import subprocess

import pytest

from realsyn_spark.fetcher import fetch_many
from tests.fetcher_harness import JPEG, cfg, start_server


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
