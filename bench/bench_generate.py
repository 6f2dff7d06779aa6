"""Rewrite throughput of the bundled SmolLM2-135M-Instruct on this CPU: batched vs one request at a time,
and in-process vs through an OpenAI-compatible HTTP server on 127.0.0.1 (serving the same model).

    PYTHONPATH=$PWD python bench/bench_generate.py [--n 4] [--max-new-tokens 32] [--cache]

Figures printed: rewrites/s, completion tokens/s, the batched/one-at-a-time ratio, and the HTTP overhead.
The "server" is a stdlib ThreadingHTTPServer on 127.0.0.1 serving /v1/chat/completions from the same
in-process SmolLM2 (serially, like a single-slot llama.cpp server): llama-cpp-python is a source-only
package that compiles llama.cpp at install time, so no prebuilt OpenAI-compatible server comes from PyPI.
`--cache` also runs the generate stage (openai backend -> that server, local[2] Spark) three times over
`--n` images: first run, rerun (requests sent: 0), one word of one sentence changed (requests sent: 1).
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from realsyn_spark.config import GenerateConfig
from udfs.generate import OpenAIGenerator, TransformersGenerator, render_prompt

RAWS = ["Vendors sell fresh mangoes and papayas at the crowded Saturday market in the old town.",
        "A red fishing boat is tied to the wooden pier while gulls circle above the harbour.",
        "Two climbers rest on a snowy ridge below the summit after a long morning.",
        "The baker pulls loaves of dark rye bread from the old stone oven at dawn.",
        "Children fly a yellow kite over the dunes on a windy afternoon.",
        "A tram passes the cathedral square where tourists feed the pigeons."]
CAPTIONS = ["a market stall with fruit", "a boat in a harbour", "climbers on a mountain", "a bakery oven",
            "a kite on a beach", "a tram in a city square"]
TAGS = [["fruit", "market"], ["boat", "pier", "bird"], ["snow", "mountain"], ["bread", "oven"], ["kite", "sand"],
        ["tram", "church", "pigeon"]]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def serve(generator: TransformersGenerator) -> tuple[ThreadingHTTPServer, str]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:   # one model, one request at a time, as a naive single-process server
                c = generator.complete([body["messages"][-1]["content"]])[0]
            data = json.dumps({"choices": [{"message": {"role": "assistant", "content": c.text},
                                            "finish_reason": c.finish_reason}],
                               "usage": {"completion_tokens": c.tokens}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/v1"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", action="store_true")
    args = parser.parse_args()
    cfg = GenerateConfig(max_new_tokens=args.max_new_tokens, batch_size=args.n, device="cpu",
                         torch_threads=args.threads)
    prompts = [render_prompt(None, RAWS[i % 6], CAPTIONS[i % 6], TAGS[i % 6]) for i in range(args.n)]
    gen, load_s = timed(lambda: TransformersGenerator(cfg))
    print(f"SmolLM2-135M-Instruct Q4_1 (dequantised fp32), {args.threads} torch threads, load {load_s:.1f}s")
    gen.complete(prompts[:1])                                        # warm-up
    results = {}
    runs = {
        "in-process, one request at a time": lambda: [gen.complete([p])[0] for p in prompts],
        f"in-process, batched ({args.n} per generate)": lambda: gen.complete(prompts),
    }
    httpd, url = serve(gen)
    client = OpenAIGenerator(GenerateConfig(backend="openai", model="smollm2", base_url=url,
                                            max_new_tokens=args.max_new_tokens, concurrency_per_task=4))
    runs["openai backend -> local server (4 in flight, server serial)"] = lambda: client.complete(prompts)
    for name, fn in runs.items():
        out, seconds = timed(fn)
        tokens = sum(c.tokens for c in out)
        results[name] = seconds
        print(f"{name:<60} {args.n / seconds:6.3f} rewrites/s  {tokens / seconds:6.1f} tokens/s  "
              f"({tokens} tokens, {seconds:.1f}s)")
    if args.cache:
        cache_runs(url, args)
    httpd.shutdown()
    names = list(results)
    print(f"batched / one-at-a-time speed-up: {results[names[0]] / results[names[1]]:.2f}x")
    print(f"through the server / in-process one-at-a-time: {results[names[2]] / results[names[0]]:.2f}x the time")
    print("sample:", repr(out[0].text))


def cache_runs(url: str, args) -> None:
    """Requests the generate stage sends: first run, rerun, after a one-word change of one sentence."""
    import tempfile

    from realsyn_spark.config import load_config
    from realsyn_spark.session import local_session_builder
    from realsyn_spark.pipeline import SPECS, run_stage
    from realsyn_spark.tables import IMAGES, RETRIEVALS, SENTENCES, Lake

    root = tempfile.mkdtemp(prefix="bench-generate-")
    cfg = load_config(overrides=[f"lake.root={root}", "generate.backend=openai", f"generate.base_url={url}",
                                 "generate.model=smollm2", f"generate.max_new_tokens={args.max_new_tokens}",
                                 "generate.tags_per_image=0", "spark.shuffle_partitions=2"])
    spark = local_session_builder(cfg, master="local[2]").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    lake = Lake(spark, cfg.lake)
    n = args.n

    def seed(raws):
        images = [(f"img{i}", "doc", i, f"http://x/{i}.jpg", CAPTIONS[i % 6], None, 200, 200, None, None, "r", None, None)
                  for i in range(n)]
        lake.overwrite(IMAGES, spark.createDataFrame(images, IMAGES.schema))
        sentences = [(f"s{i}", "doc", i, 0, t, len(t.split()), None, None, "r", None, None) for i, t in enumerate(raws)]
        lake.overwrite(SENTENCES, spark.createDataFrame(sentences, SENTENCES.schema))
        lake.overwrite(RETRIEVALS, spark.createDataFrame([(f"img{i}", 1, f"s{i}", 0.5, 0, "v", "r") for i in range(n)],
                                                         RETRIEVALS.schema))
        for table in SPECS["generate"].reads:   # the inputs this bench does not seed, empty
            lake.ensure(table)

    raws = [f"{RAWS[i % 6]} (photo {i})" for i in range(n)]
    seed(raws)
    for label, change in (("first run", None), ("rerun", None), ("one word of one sentence changed", 0)):
        if change is not None:
            raws[change] = raws[change].replace("fresh", "ripe")
            seed(raws)
        t0 = time.perf_counter()
        c = run_stage(spark, cfg, "generate", label.replace(" ", "-")).counters
        print(f"generate stage, {label:<34} requests sent {c['requests_answered']:>3}  cache hits "
              f"{c['cache_hits']:>3}  of {n} images  ({time.perf_counter() - t0:.1f}s)")
    spark.stop()


if __name__ == "__main__":
    main()
