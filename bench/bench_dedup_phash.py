"""Perceptual near-duplicate detection on planted duplicates, through the pipeline's own Spark code
(udfs.phash.phash_mapper + realsyn_spark.dedup.near_duplicate_groups: LSH join, Hamming check,
large-star/small-star connected components).

    pip install scikit-image      # bench only: its bundled sample photographs
    python bench/bench_dedup_phash.py                      # seed 2, 300 drawings, default settings
    python bench/bench_dedup_phash.py --seed 1 --hard      # the seed used while choosing; harder copies

Distinct images: scikit-image's bundled photographs (24) plus PIL drawings (random shapes on gradients).
Each gets 4 planted copies: resized to 50%, re-encoded as JPEG quality 15, cropped by 5% of its area at a
random offset, and a corner watermark (a translucent white box of 10% x 5% with text). --hard uses a
crop of 5% of each side and an opaque 18% x 7% box instead. Ground truth: an image and its copies form
a group. Reported: pairwise precision / recall of "same group" over all pairs, recall per copy kind
(copy grouped with its original), candidate pairs from the LSH join, and a sweep of the distance.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import math
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SKIMAGE = ["astronaut", "camera", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
           "coins", "moon", "page", "text", "horse", "clock", "grass", "gravel", "brick", "retina", "colorwheel",
           "logo", "cell", "microaneurysms", "binary_blobs", "checkerboard", "shepp_logan_phantom"]


def skimage_images():
    from PIL import Image
    import skimage.data as data

    out = []
    for name in SKIMAGE:
        a = getattr(data, name)()
        if a.dtype == bool:
            a = a.astype(np.float64)
        if a.ndim == 3 and a.shape[-1] == 4:
            a = a[..., :3]
        if a.dtype != np.uint8:
            a = (255 * (a - a.min()) / (np.ptp(a) + 1e-9)).astype(np.uint8)
        out.append(Image.fromarray(a).convert("RGB"))
    return out


def drawn_images(rng: random.Random, n: int):
    from PIL import Image, ImageDraw

    out = []
    for _ in range(n):
        w, h = rng.randint(200, 500), rng.randint(200, 500)
        c1 = np.array([rng.randint(0, 255) for _ in range(3)])
        c2 = np.array([rng.randint(0, 255) for _ in range(3)])
        t = np.linspace(0, 1, w)[None, :, None] if rng.random() < .5 else np.linspace(0, 1, h)[:, None, None]
        im = Image.fromarray(((c1 * (1 - t) + c2 * t) * np.ones((h, w, 1))).astype(np.uint8))
        draw = ImageDraw.Draw(im)
        for _ in range(rng.randint(3, 9)):
            x0, y0 = rng.randint(0, w), rng.randint(0, h)
            box = [x0, y0, x0 + rng.randint(20, w // 2), y0 + rng.randint(20, h // 2)]
            colour = tuple(rng.randint(0, 255) for _ in range(3))
            k = rng.random()
            if k < .35:
                draw.ellipse(box, fill=colour)
            elif k < .7:
                draw.rectangle(box, fill=colour)
            else:
                draw.polygon([(rng.randint(0, w), rng.randint(0, h)) for _ in range(3)], fill=colour)
        out.append(im)
    return out


def encode(im, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def copies(im, rng: random.Random, hard: bool) -> dict[str, bytes]:
    from PIL import Image, ImageDraw

    w, h = im.size
    out = {"resize": encode(im.resize((max(1, w // 2), max(1, h // 2)), Image.BILINEAR)),
           "jpeg": encode(im, "JPEG", quality=15)}
    if hard:
        mx, my = int(round(w * .05)), int(round(h * .05))
        ox, oy = rng.randint(0, mx), rng.randint(0, my)
        out["crop"] = encode(im.crop((ox, oy, ox + w - mx, oy + h - my)))
        mark = im.copy()
        bw, bh = int(w * .18), int(h * .07)
        ImageDraw.Draw(mark).rectangle([w - bw - 4, h - bh - 4, w - 4, h - 4], fill=(255, 255, 255))
        ImageDraw.Draw(mark).text((w - bw, h - bh - 2), "(c) photo", fill=(0, 0, 0))
        out["overlay"] = encode(mark)
    else:
        s = math.sqrt(0.95)
        cw, ch = int(round(w * s)), int(round(h * s))
        ox, oy = rng.randint(0, w - cw), rng.randint(0, h - ch)
        out["crop"] = encode(im.crop((ox, oy, ox + cw, oy + ch)))
        base = im.convert("RGBA")
        layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        bw, bh = int(w * .10), int(h * .05)
        x0, y0 = rng.choice([4, w - bw - 4]), rng.choice([4, h - bh - 4])
        draw.rectangle([x0, y0, x0 + bw, y0 + bh], fill=(255, 255, 255, 110))
        draw.text((x0 + 2, y0 + 1), "(c) site", fill=(0, 0, 0, 200))
        out["overlay"] = encode(Image.alpha_composite(base, layer).convert("RGB"))
    return out


def pairwise(groups_true: dict[str, int], predicted: dict[str, str]) -> tuple[float, float]:
    from collections import Counter

    both = Counter((groups_true[i], predicted[i]) for i in groups_true)
    tp = sum(n * (n - 1) // 2 for n in both.values())
    pred_pairs = sum(n * (n - 1) // 2 for n in Counter(predicted.values()).values())
    true_pairs = sum(n * (n - 1) // 2 for n in Counter(groups_true.values()).values())
    return tp / max(pred_pairs, 1), tp / max(true_pairs, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--drawn", type=int, default=300)
    parser.add_argument("--hard", action="store_true")
    parser.add_argument("--sweep", default="4,6,8,10")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override, e.g. --set image_filter.phash_key_blocks=3")
    args = parser.parse_args()

    from realsyn_spark.config import load_config
    from realsyn_spark.dedup import near_duplicate_groups
    from realsyn_spark.session import local_session_builder
    from udfs.phash import phash_mapper

    cfg = load_config(overrides=["spark.shuffle_partitions=4", *args.overrides])
    icfg = cfg.image_filter
    rng = random.Random(args.seed)
    bases = skimage_images() + drawn_images(rng, args.drawn)
    rows, truth, kind = [], {}, {}
    for g, im in enumerate(bases):
        items = {"original": encode(im), **copies(im, rng, args.hard)}
        for k, data in items.items():
            image_id = f"g{g:04d}-{k}"
            with __import__("PIL.Image").Image.open(io.BytesIO(data)) as decoded:
                area = decoded.size[0] * decoded.size[1]
            rows.append((image_id, hashlib.sha256(data).hexdigest(), data, area))
            truth[image_id], kind[image_id] = g, k
    spark = local_session_builder(cfg, master="local[2]").config("spark.driver.memory", "3g").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    df = spark.createDataFrame(rows, "image_id string, sha256 string, image_bytes binary, area long")
    t0 = time.perf_counter()
    hashed = (df.repartition(4).mapInPandas(phash_mapper(icfg.phash_core_fraction),
                                            "sha256 string, phash bigint, phash_core bigint")
              .join(df.select("image_id", "sha256", "area"), "sha256").cache())
    n = hashed.count()
    t_hash = time.perf_counter() - t0
    print(f"{len(bases)} distinct images ({len(SKIMAGE)} scikit-image + {args.drawn} drawn), {n} rows with copies; "
          f"seed {args.seed}; copies: {'hard' if args.hard else 'default'}; pHash of both views in {t_hash:.1f}s")
    print(f"LSH: {icfg.phash_blocks} blocks, keys of {icfg.phash_key_blocks} blocks, window {icfg.phash_bucket_window}; "
          f"core view {icfg.phash_core_fraction}")
    print(f"{'distance':>8} {'precision':>9} {'recall':>7} {'cand.pairs':>10} {'edges':>6}   recall per copy kind")
    for distance in [int(x) for x in args.sweep.split(",")]:
        t0 = time.perf_counter()
        groups, counters = near_duplicate_groups(hashed.select("image_id", "phash", "phash_core", "area"), "image_id",
                                                 distance, icfg.phash_blocks, icfg.phash_key_blocks,
                                                 icfg.phash_bucket_window)
        rep = {r.image_id: r.representative for r in groups.collect()}
        predicted = {i: rep.get(i, i) for i in truth}
        precision, recall = pairwise(truth, predicted)
        per_kind = {}
        for k in ("resize", "jpeg", "crop", "overlay"):
            members = [i for i in truth if kind[i] == k]
            per_kind[k] = sum(predicted[i] == predicted[i.rsplit("-", 1)[0] + "-original"] for i in members) / len(members)
        marker = " <- default" if distance == icfg.phash_max_distance else ""
        print(f"{distance:>8} {precision:>9.4f} {recall:>7.4f} {counters['near_dup_candidate_pairs']:>10} "
              f"{counters['near_dup_edges']:>6}   " + " ".join(f"{k}={v:.3f}" for k, v in per_kind.items())
              + f"  ({time.perf_counter() - t0:.1f}s){marker}")
    spark.stop()


if __name__ == "__main__":
    main()
