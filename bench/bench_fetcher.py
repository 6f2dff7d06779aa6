"""Throughput of realsyn_spark.fetcher.fetch_many against a local server that adds latency per image.

    python bench/bench_fetcher.py                 # 2000 URLs, 50 ms latency, 16 workers
    python bench/bench_fetcher.py --n 500 --latency-ms 100 --concurrency 32
    python bench/bench_fetcher.py --hostile --timeout-s 1 --retries 2   # worst case per hostile shape

The server runs in a separate process (so its Python threads do not compete with the fetcher's for the
GIL, as a remote host would not) on 127.0.0.1 only, and serves the same JPEG for every URL; the query
string makes each URL distinct. Measured runs, all through fetch_many:

* sequential baseline: --baseline-n URLs with one worker and a per-host limit of 1;
* concurrent, per-host limit at the module default (DEFAULT_PER_HOST_LIMIT);
* concurrent, per-host limit raised to the worker count (everything goes to one host here, so the
  per-host limit, not the pool size, caps concurrency in the previous run).

--hostile instead fetches each misbehaving shape of tests/hostile_http.py (dripped status line or
headers, endless 1xx, endless tiny chunks, Content-Length lies, gzip bomb, ...) `--repeat` times and
prints the worst wall time per URL as a multiple of timeout_s, next to the URL deadline's multiple.
"""
from __future__ import annotations

import argparse
import io
import multiprocessing
import sys
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from realsyn_spark.config import FetchConfig
from realsyn_spark.fetcher import DEFAULT_PER_HOST_LIMIT, fetch_many


def make_jpeg(side: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise((side, side), 40).convert("RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()


def serve(port_queue: multiprocessing.Queue, latency_s: float, image_side: int) -> None:
    """Server process: every GET sleeps `latency_s`, then answers with the same JPEG over keep-alive."""
    body = make_jpeg(image_side)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle on, the body waits for the client's delayed
        # ACK (~40 ms), which would bill the fetcher for a server artefact. Real image servers avoid it.
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def do_GET(self):
            time.sleep(latency_s)
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.request_queue_size = 128
    port_queue.put((server.server_address[1], len(body)))
    server.serve_forever()


def timed_run(label: str, urls: list[str], cfg: FetchConfig, per_host_limit: int) -> float:
    start = time.perf_counter()
    results = fetch_many(urls, cfg, per_host_limit=per_host_limit)
    elapsed = time.perf_counter() - start
    rate = len(urls) / elapsed
    statuses = dict(Counter(r.status for r in results))
    print(f"{label:<44} {len(urls):>6} URLs  {elapsed:7.2f} s  {rate:8.1f} images/s  {statuses}")
    return rate


def hostile_run(timeout_s: float, retries: int, repeat: int) -> None:
    from tests.hostile_http import EXPECTED, HostileServer

    server = HostileServer()
    cfg = FetchConfig(timeout_s=timeout_s, retries=retries, max_bytes=200_000, allow_private_hosts=["127.0.0.1"])
    print(f"timeout_s={timeout_s}, retries={retries}, url_deadline_s={cfg.effective_url_deadline_s} "
          f"({cfg.effective_url_deadline_s / timeout_s:.1f} x timeout_s), max_bytes={cfg.max_bytes}")
    worst_all = 0.0
    try:
        for shape in EXPECTED:
            times, statuses = [], Counter()
            for i in range(repeat):
                start = time.perf_counter()
                result = fetch_many([server.url(shape, str(i))], cfg)[0]
                times.append(time.perf_counter() - start)
                statuses[result.status] += 1
            worst_all = max(worst_all, max(times))
            print(f"{shape:<20} worst {max(times):6.2f} s = {max(times) / timeout_s:5.2f} x timeout_s  {dict(statuses)}")
        print(f"worst over all shapes: {worst_all / timeout_s:.2f} x timeout_s")
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="URLs in each concurrent run")
    parser.add_argument("--baseline-n", type=int, default=100, help="URLs in the sequential baseline")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="server delay per image")
    parser.add_argument("--concurrency", type=int, default=16, help="FetchConfig.concurrency_per_task")
    parser.add_argument("--image-side", type=int, default=256, help="served JPEG is side x side pixels")
    parser.add_argument("--hostile", action="store_true", help="worst case per hostile server shape instead")
    parser.add_argument("--timeout-s", type=float, default=1.0, help="--hostile: FetchConfig.timeout_s")
    parser.add_argument("--retries", type=int, default=2, help="--hostile: FetchConfig.retries")
    parser.add_argument("--repeat", type=int, default=2, help="--hostile: fetches per shape")
    args = parser.parse_args()
    if args.hostile:
        hostile_run(args.timeout_s, args.retries, args.repeat)
        return

    port_queue: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(port_queue, args.latency_ms / 1000, args.image_side),
                                     daemon=True)
    server.start()
    port, image_bytes = port_queue.get(timeout=30)
    try:
        base = f"http://127.0.0.1:{port}/img.jpg?i="
        cfg = FetchConfig(concurrency_per_task=args.concurrency, allow_private_hosts=["127.0.0.1"])
        print(f"server: 127.0.0.1:{port}, {args.latency_ms:.0f} ms latency per image, "
              f"{args.image_side}x{args.image_side} JPEG of {image_bytes} bytes; timeout_s={cfg.timeout_s}, "
              f"retries={cfg.retries}, max_pixels={cfg.max_pixels}")
        fetch_many([base + "warmup"], cfg)  # imports, Pillow plugin registration

        sequential_cfg = cfg.model_copy(update={"concurrency_per_task": 1})
        baseline = timed_run("sequential (1 worker, per-host limit 1)",
                             [f"{base}seq{i}" for i in range(args.baseline_n)], sequential_cfg, 1)
        default_limit = timed_run(f"{args.concurrency} workers, per-host limit {DEFAULT_PER_HOST_LIMIT} (default)",
                                  [f"{base}a{i}" for i in range(args.n)], cfg, DEFAULT_PER_HOST_LIMIT)
        matched_limit = timed_run(f"{args.concurrency} workers, per-host limit {args.concurrency}",
                                  [f"{base}b{i}" for i in range(args.n)], cfg, args.concurrency)

        ideal = 1000 / args.latency_ms
        print(f"\nideal per connection at {args.latency_ms:.0f} ms: {ideal:.1f} images/s")
        print(f"speed-up over sequential: per-host limit {DEFAULT_PER_HOST_LIMIT}: {default_limit / baseline:.1f}x, "
              f"per-host limit {args.concurrency}: {matched_limit / baseline:.1f}x")
        print(f"images/s per task: {matched_limit:.1f} (target >= 100)")
    finally:
        server.terminate()
        server.join(5)


if __name__ == "__main__":
    main()
