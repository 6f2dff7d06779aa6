"""The fetch stage on Spark against a local server on 127.0.0.1 (allow-listed): statuses per URL in
`image_blobs`, failures in `ingest_errors`, SSRF refusals (also after a redirect), size and pixel
limits, content sniffing, retries, each distinct URL fetched once, and a rerun that sends no request.

Only IP literals are used, so nothing is resolved; the private and metadata addresses are refused
before any connection is made.
"""
from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from PIL import Image

from realsyn_spark.config import load_config
from realsyn_spark.pipeline import run_stage
from realsyn_spark.tables import IMAGE_BLOBS, INGEST_ERRORS, Lake
from tests.image_payloads import bomb_png, encode, exif_rotated_jpeg, noisy_rgb

MAX_BYTES = 200_000
MAX_PIXELS = 1_000_000


JPEG = encode(Image.new("RGB", (120, 90), "blue"), "JPEG")
PNG = encode(Image.new("RGB", (64, 48), "green"), "PNG")
NOISY = encode(noisy_rgb(128, 128), "JPEG")
HTML = b"<!doctype html><html><body>Not found, but with a 200</body></html>"
BIG = JPEG[:64] + b"\x00" * (MAX_BYTES * 2)

# path -> (status, body, content type, extra headers); "stream" bodies are sent without Content-Length
ROUTES = {
    "/good.jpg": (200, JPEG, "image/jpeg", {}),
    "/good.png": (200, PNG, "image/png", {}),
    "/exif.jpg": (200, exif_rotated_jpeg(), "image/jpeg", {}),
    "/png-as-html": (200, PNG, "text/html", {}),
    "/html-as-jpeg.jpg": (200, HTML, "image/jpeg", {}),
    "/truncated.jpg": (200, NOISY[: len(NOISY) // 2], "image/jpeg", {}),
    "/bomb.png": (200, bomb_png(2000, 2000), "image/png", {}),
    "/big.jpg": (200, BIG, "image/jpeg", {}),
    "/big-stream.jpg": (200, BIG, "image/jpeg", {"stream": True}),
    "/missing.jpg": (404, HTML, "text/html", {}),
    "/error.jpg": (500, b"oops", "text/plain", {}),
    "/redirect-private.jpg": (302, b"", "text/plain", {"Location": "http://10.0.0.7/x.jpg"}),
    "/redirect-metadata.jpg": (302, b"", "text/plain", {"Location": "http://169.254.169.254/latest/meta-data/"}),
    "/redirect-good.jpg": (302, b"", "text/plain", {"Location": "/good.png?via=redirect"}),
}
EXPECTED = {  # path -> (status, width, height, format)
    "/good.jpg": ("ok", 120, 90, "JPEG"), "/good.png": ("ok", 64, 48, "PNG"), "/exif.jpg": ("ok", 30, 60, "JPEG"),
    "/png-as-html": ("ok", 64, 48, "PNG"), "/flaky.jpg": ("ok", 120, 90, "JPEG"),
    "/redirect-good.jpg": ("ok", 64, 48, "PNG"),
    "/html-as-jpeg.jpg": ("not_an_image",) + (None,) * 3, "/truncated.jpg": ("decode_error",) + (None,) * 3,
    "/bomb.png": ("too_large",) + (None,) * 3, "/big.jpg": ("too_large",) + (None,) * 3,
    "/big-stream.jpg": ("too_large",) + (None,) * 3, "/missing.jpg": ("http_error",) + (None,) * 3,
    "/error.jpg": ("http_error",) + (None,) * 3, "/redirect-private.jpg": ("blocked",) + (None,) * 3,
    "/redirect-metadata.jpg": ("blocked",) + (None,) * 3,
}
PRIVATE_URL = "http://10.0.0.5/direct.jpg"  # never contacted: refused before connecting


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = urlsplit(self.path).path
        with self.server.lock:
            self.server.requests[path] += 1
            seen = self.server.requests[path]
        if path == "/flaky.jpg":  # 500 once, then the image: the retry succeeds
            code, body, ctype, headers = (500, b"busy", "text/plain", {}) if seen == 1 else (200, JPEG, "image/jpeg", {})
        else:
            code, body, ctype, headers = ROUTES.get(path, (404, HTML, "text/html", {}))
        headers = dict(headers)
        stream = headers.pop("stream", False)
        try:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            if stream:
                self.send_header("Connection", "close")
                self.close_connection = True
            else:
                self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            for start in range(0, len(body), 65536):
                self.wfile.write(body[start:start + 65536])
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the fetcher hung up on purpose (too large, not an image)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.lock = threading.Lock()
    httpd.requests = Counter()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def fetched(spark, server, tmp_path_factory):
    base = f"http://127.0.0.1:{server.server_address[1]}"
    urls = [base + path for path in EXPECTED] + [PRIVATE_URL]
    corpus = tmp_path_factory.mktemp("fetch_corpus")
    records = []
    for n, chunk in enumerate((urls[:8], urls[8:], urls[:3])):  # the first URLs appear in two documents
        texts, images = ["A fisherman is repairing an old net at the harbour."], [None]
        for url in chunk:
            texts.append(None)
            images.append(url)
        records.append({"texts": texts, "images": images,
                        "general_metadata": json.dumps({"url": f"https://pages.example/{n}"})})
    (corpus / "pages.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = load_config(overrides=[
        f"lake.root={tmp_path_factory.mktemp('fetch_lake')}", f"ingest.input_paths=[{corpus}]",
        "spark.shuffle_partitions=4", "fetch.allow_private_hosts=[127.0.0.1]", "fetch.timeout_s=3",
        "fetch.retries=1", f"fetch.max_bytes={MAX_BYTES}", f"fetch.max_pixels={MAX_PIXELS}"])
    lake = Lake(spark, cfg.lake)
    run_stage(spark, cfg, "ingest", "run-1")
    first = run_stage(spark, cfg, "fetch", "run-1")
    requests_after_first = Counter(server.requests)
    second = run_stage(spark, cfg, "fetch", "run-2")
    return base, lake, first, second, requests_after_first, Counter(server.requests)


def test_every_url_has_a_status_with_size_and_format(fetched):
    base, lake, first, *_ = fetched
    blobs = {r.image_url: r for r in lake.read(IMAGE_BLOBS).collect()}
    assert first.rows_in == len(EXPECTED) + 1  # distinct URLs without a blob row
    for path, (status, width, height, fmt) in EXPECTED.items():
        blob = blobs[base + path]
        assert (blob.status, blob.width, blob.height, blob.format) == (status, width, height, fmt), path
        assert blob.origin == "http"
        assert (blob.image_bytes is not None) == (status == "ok") and (blob.sha256 is not None) == (status == "ok")
        assert (blob.error is None) == (status == "ok"), path
    assert blobs[PRIVATE_URL].status == "blocked"
    assert "pixels" in blobs[base + "/bomb.png"].error


def test_failures_are_in_ingest_errors(fetched):
    base, lake, *_ = fetched
    errors = {r.source_uri: r for r in lake.read(INGEST_ERRORS).where("stage = 'fetch'").collect()}
    failing = {base + p: s[0] for p, s in EXPECTED.items() if s[0] != "ok"} | {PRIVATE_URL: "blocked"}
    assert {url: e.kind for url, e in errors.items()} == failing
    assert all(e.reason for e in errors.values())
    assert "10.0.0.7" in errors[base + "/redirect-private.jpg"].reason
    assert "169.254.169.254" in errors[base + "/redirect-metadata.jpg"].reason


def test_each_url_fetched_once_retries_counted_and_private_hosts_never_contacted(fetched):
    *_, requests, _ = fetched
    assert requests["/good.jpg"] == 1 and requests["/good.png"] == 2  # once itself, once as a redirect target
    assert requests["/flaky.jpg"] == 2 and requests["/error.jpg"] == 2  # retries=1 for 5xx
    assert requests["/missing.jpg"] == 1  # 4xx is final
    assert requests["/redirect-private.jpg"] == 1 and requests["/redirect-metadata.jpg"] == 1


def test_rerun_makes_no_request(fetched):
    _, lake, first, second, after_first, after_second = fetched
    assert second.rows_in == 0
    assert after_second == after_first
    statuses = lambda run: {k: v for k, v in run.counters.items() if k.startswith("status:")}  # noqa: E731
    assert statuses(second) == statuses(first) and lake.read(IMAGE_BLOBS).count() == len(EXPECTED) + 1


# -- a hostile host among good ones: the task budget holds and deferred URLs are fetched next run ------

TASK_BUDGET_S = 2.0
URL_DEADLINE_S = 0.8
BUDGET_MARGIN = 1.4  # ratio to the budget: thread scheduling on a busy machine


@pytest.fixture(scope="module")
def hostile_run(spark, server, tmp_path_factory):
    from tests.hostile_http import HostileServer

    hostile = HostileServer()
    good = [f"http://127.0.0.1:{server.server_address[1]}/good.jpg?budget={i}" for i in range(40)]
    # "localhost" is the hostile host's name so the per-host limit keeps it apart from the good host.
    silent = [f"http://localhost:{hostile.port}/silent/{i}.jpg" for i in range(8)]
    corpus = tmp_path_factory.mktemp("hostile_corpus")
    urls = good + silent
    records = [{"texts": ["A dog is fetching a stick from the lake."] + [None] * 6, "images": [None] + urls[i:i + 6],
                "general_metadata": json.dumps({"url": f"https://pages.example/h{i}"})} for i in range(0, len(urls), 6)]
    (corpus / "pages.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = load_config(overrides=[
        f"lake.root={tmp_path_factory.mktemp('hostile_lake')}", f"ingest.input_paths=[{corpus}]",
        "spark.shuffle_partitions=1", "fetch.allow_private_hosts=[127.0.0.1,localhost]", "fetch.timeout_s=5",
        f"fetch.url_deadline_s={URL_DEADLINE_S}", f"fetch.task_budget_s={TASK_BUDGET_S}", "fetch.retries=1",
        "fetch.per_host_limit=1", "fetch.concurrency_per_task=4"])
    lake = Lake(spark, cfg.lake)
    run_stage(spark, cfg, "ingest", "run-1")
    first = run_stage(spark, cfg, "fetch", "run-1")
    after_first = {r.image_url: r.status for r in lake.read(IMAGE_BLOBS).collect()}
    spans_first = list(hostile.spans)
    second = run_stage(spark, cfg, "fetch", "run-2")
    after_second = {r.image_url: r.status for r in lake.read(IMAGE_BLOBS).collect()}
    errors = {r.source_uri: r.kind for r in lake.read(INGEST_ERRORS).collect()}
    hostile.close()
    return good, silent, first, second, after_first, after_second, spans_first, errors


def test_hostile_host_does_not_hold_the_task_past_its_budget(hostile_run):
    good, silent, first, _, after_first, _, spans, _ = hostile_run
    assert first.rows_in == len(good) + len(silent)
    assert all(after_first[url] == "ok" for url in good)  # none of the good URLs waited on the bad host
    statuses = Counter(after_first[url] for url in silent)
    assert set(statuses) <= {"timeout", "deferred"} and statuses["timeout"] >= 1 and statuses["deferred"] >= 3
    held = max(end for _, end in spans) - min(start for start, _ in spans)
    assert held / TASK_BUDGET_S <= BUDGET_MARGIN  # from the first hostile request to the last hang-up
    assert all((end - start) / URL_DEADLINE_S <= BUDGET_MARGIN for start, end in spans)


def test_deferred_urls_are_fetched_by_the_next_run_and_are_not_errors(hostile_run):
    good, silent, first, second, after_first, after_second, _, errors = hostile_run
    deferred = [url for url in silent if after_first[url] == "deferred"]
    assert second.rows_in == len(deferred)  # only the deferred URLs: nothing is fetched twice
    assert sum(after_second[url] == "timeout" for url in silent) > sum(after_first[url] == "timeout" for url in silent)
    assert all(after_second[url] == "ok" for url in good)
    assert all(errors[url] == "timeout" for url in silent if after_second[url] == "timeout")
    assert not any(url in errors for url in silent if after_second[url] == "deferred")
