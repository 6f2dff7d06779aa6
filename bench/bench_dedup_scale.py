"""Scaling of the dedup joins: candidate pairs vs rows, and throughput per core.

    python bench/bench_dedup_scale.py                                  # pHash at 100k, 300k, 1M rows
    python bench/bench_dedup_scale.py --semantic-sizes 20000,60000,200000 --skip-phash
    python bench/bench_dedup_scale.py --phash-udf 400                  # pHash UDF on real image bytes

* pHash near-duplicates (realsyn_spark.dedup.near_duplicate_groups: LSH join + Hamming check + connected
  components) on synthetic rows made in Spark: 90% distinct images with random 64-bit hashes (two
  views), 10% copies of a random earlier row with up to 3 flipped bits per view. Candidate pairs should
  grow ~linearly with rows (a quadratic join would grow 10x for 3.3x rows).
* semantic dedup (semantic_duplicate_groups: k-means + per-cluster cosine + union-find) on random unit
  vectors with 5% planted near-copies: in-cluster pairs compared grow linearly (clusters of ~1000).
* --phash-udf N: the pHash mapInPandas UDF alone, on N real JPEG images (640x480), images/s per core.

Throughput per core = rows / wall time / Spark cores (local[2] here). Wall times on a shared 2-core
machine vary with its load; the pair counts do not.
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def synthetic_hashes(spark, n: int):
    from pyspark.sql import functions as F

    rows = spark.range(n).repartition(8)
    is_copy = (F.pmod(F.xxhash64("id", F.lit(7)), F.lit(10)) == 0) & (F.col("id") > 0)
    src = F.when(is_copy, F.pmod(F.xxhash64("id", F.lit(8)), F.col("id"))).otherwise(F.col("id"))

    def flips(salt: int):
        out = F.lit(0).cast("bigint")
        for i in range(3):
            bit = F.expr(f"shiftleft(1L, cast(pmod(xxhash64(id, {salt + i}), 64) as int))")
            out = out.bitwiseXOR(F.when(is_copy, bit).otherwise(F.lit(0).cast("bigint")))
        return out

    return rows.select(
        F.format_string("i%09d", "id").alias("image_id"),
        F.xxhash64(src, F.lit(1)).bitwiseXOR(flips(100)).alias("phash"),
        F.xxhash64(src, F.lit(2)).bitwiseXOR(flips(200)).alias("phash_core"),
        (F.pmod(F.xxhash64("id", F.lit(3)), F.lit(500_000)) + 10_000).alias("area"))


def bench_phash(spark, sizes, cores, cfg):
    from realsyn_spark.dedup import near_duplicate_groups

    icfg = cfg.image_filter
    print(f"pHash near-dup, LSH {icfg.phash_blocks} blocks / keys of {icfg.phash_key_blocks}, window "
          f"{icfg.phash_bucket_window}, distance {icfg.phash_max_distance}")
    print(f"{'rows':>9} {'cand.pairs':>10} {'pairs/row':>9} {'edges':>8} {'groups':>7} {'CC rounds':>9} "
          f"{'seconds':>8} {'rows/s/core':>11}")
    for n in sizes:
        items = synthetic_hashes(spark, n).localCheckpoint(eager=True)
        t0 = time.perf_counter()
        groups, counters = near_duplicate_groups(items, "image_id", icfg.phash_max_distance, icfg.phash_blocks,
                                                 icfg.phash_key_blocks, icfg.phash_bucket_window)
        n_groups = groups.select("representative").distinct().count()
        seconds = time.perf_counter() - t0
        print(f"{n:>9} {counters['near_dup_candidate_pairs']:>10} {counters['near_dup_candidate_pairs'] / n:>9.3f} "
              f"{counters['near_dup_edges']:>8} {n_groups:>7} {counters['near_dup_cc_rounds']:>9} {seconds:>8.1f} "
              f"{n / seconds / cores:>11.0f}")


def bench_semantic(spark, sizes, cores, cfg):
    from realsyn_spark.dedup import semantic_duplicate_groups

    d = cfg.dedup
    print(f"\nsemantic dedup, {d.items_per_cluster} rows per cluster, threshold {d.image_threshold}, dim 64")
    print(f"{'rows':>9} {'clusters':>8} {'pairs compared':>14} {'pairs/row':>9} {'dropped':>8} {'seconds':>8} "
          f"{'rows/s/core':>11}")
    rng = np.random.default_rng(0)
    for n in sizes:
        base = rng.normal(size=(n, 64)).astype(np.float32)
        copies = rng.random(n) < 0.05
        src = rng.integers(0, n, size=n)
        base[copies] = base[src[copies]] + 0.05 * rng.normal(size=(int(copies.sum()), 64))
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        frame = spark.createDataFrame([(f"v{i:08d}", base[i].tolist()) for i in range(n)],
                                      "item string, embedding array<float>").repartition(8).localCheckpoint(eager=True)
        t0 = time.perf_counter()
        groups, counters = semantic_duplicate_groups(spark, frame, "item", d.image_threshold, d.items_per_cluster,
                                                     None, d.kmeans_sample_size, d.kmeans_iterations, d.seed)
        dropped = groups.count()
        seconds = time.perf_counter() - t0
        print(f"{n:>9} {counters['clusters']:>8} {counters['pairs_compared']:>14} "
              f"{counters['pairs_compared'] / n:>9.1f} {dropped:>8} {seconds:>8.1f} {n / seconds / cores:>11.0f}")


def bench_phash_udf(spark, n, cores, cfg):
    from PIL import Image

    from udfs.phash import phash_mapper

    rng = np.random.default_rng(0)
    data = []
    for i in range(n):
        arr = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
        img = Image.fromarray(arr).resize((640, 480), Image.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        data.append((f"s{i}", buf.getvalue()))
    frame = spark.createDataFrame(data, "sha256 string, image_bytes binary").repartition(cores * 2).localCheckpoint(eager=True)
    t0 = time.perf_counter()
    frame.mapInPandas(phash_mapper(cfg.image_filter.phash_core_fraction),
                      "sha256 string, phash bigint, phash_core bigint").count()
    seconds = time.perf_counter() - t0
    print(f"\npHash UDF (decode 640x480 JPEG + 2 pHash views): {n} images in {seconds:.1f}s = "
          f"{n / seconds / cores:.0f} images/s/core")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,300000,1000000")
    parser.add_argument("--semantic-sizes", default="")
    parser.add_argument("--phash-udf", type=int, default=0)
    parser.add_argument("--skip-phash", action="store_true")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override, e.g. --set image_filter.phash_key_blocks=3")
    args = parser.parse_args()

    from realsyn_spark.config import load_config
    from realsyn_spark.session import local_session_builder

    cfg = load_config(overrides=["spark.shuffle_partitions=8", *args.overrides])
    spark = (local_session_builder(cfg, master="local[2]").config("spark.driver.memory", "6g")
             .config("spark.sql.shuffle.partitions", "16").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    cores = spark.sparkContext.defaultParallelism
    if not args.skip_phash:
        bench_phash(spark, [int(x) for x in args.sizes.split(",")], cores, cfg)
    if args.semantic_sizes:
        bench_semantic(spark, [int(x) for x in args.semantic_sizes.split(",")], cores, cfg)
    if args.phash_udf:
        bench_phash_udf(spark, args.phash_udf, cores, cfg)
    spark.stop()


if __name__ == "__main__":
    main()
