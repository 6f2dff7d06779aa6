"""Captioner throughput on this CPU: the executor body (udfs/caption.py, decode included) batched vs one image
at a time, with the tiny random VisionEncoderDecoder the tests build (no captioner weights are reachable here).

    PYTHONPATH=$PWD python bench/bench_caption.py [--n 64] [--batch-size 16] [--image-size 32] [--beams 3]

Prints captions/s for batch size 1 (the baseline, same run) and the batched size, and their ratio. The model
is tiny (2+2 layers, width 32), so the figure is dominated by decoding, preprocessing and generate()'s per-call
overhead: it shows what batching saves per call, not what BLIP or Florence-2 would reach.
"""
from __future__ import annotations

import argparse
import io
import tempfile
import time

import numpy as np
import pandas as pd
from PIL import Image

from realsyn_spark.config import CaptionConfig
from tests.tiny_captioner import build_tiny_captioner
from udfs.caption import image_captioner, load_captioner


def photos(n: int, seed: int = 0) -> list[bytes]:
    """JPEGs of 240x320 with smooth structure (gradients + noise), as a web photo is decoded and resized."""
    rng = np.random.default_rng(seed)
    out = []
    y, x = np.mgrid[0:240, 0:320]
    for _ in range(n):
        base = np.stack([(x * rng.uniform(0.2, 1.0) + y * rng.uniform(0.2, 1.0)) % 256 for _ in range(3)], -1)
        pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def rate(path: str, images: list[bytes], batch_size: int, beams: int, max_new_tokens: int, repeats: int) -> float:
    cfg = CaptionConfig(model=path, batch_size=batch_size, num_beams=beams, max_new_tokens=max_new_tokens,
                        device="cpu")
    frame = pd.DataFrame({"request_hash": [f"{i:032x}" for i in range(len(images))], "image_bytes": images})
    body = image_captioner(cfg, path)
    load_captioner(cfg, path)
    list(body(iter([frame.head(batch_size)])))        # warm-up: first-call allocations
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = pd.concat(list(body(iter([frame]))))
        best = min(best, time.perf_counter() - t0)
        # Random weights may end a caption at once (drop_reason empty_caption): still one generate() row.
        assert len(out) == len(images) and out["drop_reason"].isin([None, "empty_caption"]).all()
    return len(images) / best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--beams", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    path = str(build_tiny_captioner(tempfile.mkdtemp(prefix="bench-captioner-"), image_size=args.image_size))
    images = photos(args.n)
    print(f"tiny VisionEncoderDecoder (ViT {args.image_size}px, GPT-2 decoder), {args.n} JPEGs 320x240, "
          f"num_beams={args.beams}, max_new_tokens={args.max_new_tokens}, torch threads={torch.get_num_threads()}")
    one = rate(path, images, 1, args.beams, args.max_new_tokens, args.repeats)
    batched = rate(path, images, args.batch_size, args.beams, args.max_new_tokens, args.repeats)
    print(f"batch size 1 (baseline): {one:8.1f} captions/s")
    print(f"batch size {args.batch_size:<3}        : {batched:8.1f} captions/s")
    print(f"ratio batched / one at a time: {batched / one:.2f}x")


if __name__ == "__main__":
    main()
