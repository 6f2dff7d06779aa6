"""Rewrite throughput of the bundled SmolLM2-135M-Instruct on this CPU: batched vs one request at a time,
and in-process vs through an OpenAI-compatible HTTP server on 127.0.0.1 (serving the same model).

    PYTHONPATH=$PWD python bench/bench_generate.py [--n 4] [--max-new-tokens 32]

Figures printed: rewrites/s, completion tokens/s, the batched/one-at-a-time ratio, and the HTTP overhead.
The cache figures (a rerun sends 0 requests; a one-word change resends only its row) are asserted by
tests/test_generate.py::test_openai_backend_cache_rerun_and_changed_prompt.
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
    httpd.shutdown()
    names = list(results)
    print(f"batched / one-at-a-time speed-up: {results[names[0]] / results[names[1]]:.2f}x")
    print(f"through the server / in-process one-at-a-time: {results[names[2]] / results[names[0]]:.2f}x the time")
    print("sample:", repr(out[0].text))


if __name__ == "__main__":
    main()
