"""Scale views and WebDataset export throughput, each beside a baseline measured in the same run.

    PYTHONPATH=$PWD python bench/bench_export.py --rows 1000000 --images 4000

1. Scale view query time: `balanced` with --rows rows in Zipf-sized clusters (written to Delta once);
   per cap, `scale_view(lake, cap).count()` and the target form (`scale_view(lake, target=...)`: the
   cluster-size histogram + the capped count), against a full scan of the table
   (`lake.read(BALANCED).count()` over the same files: the floor any query pays).
2. Export throughput: --images rows with 160x120 JPEG bytes through `write_webdataset` (Spark tasks,
   staging + move, sizes.json) in images/s, against a bare single-process tarfile loop writing the same
   samples (`udfs.shards.sample_members`) from a pandas frame already on the driver.
"""
from __future__ import annotations

import argparse
import io
import tarfile
import tempfile
import time

import numpy as np


def _timed(fn, repeat=3):
    best, value = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t0)
    return best, value


def _jpegs(n, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        pixels = (rng.random((120, 160, 3)) * 40 + rng.integers(0, 200, 3)).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
        out.append(buffer.getvalue())
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--caps", type=int, nargs="+", default=[20, 35, 180])
    args = ap.parse_args()

    import pandas as pd
    from pyspark.sql import functions as F

    from realsyn_spark import scales
    from realsyn_spark.config import load_config
    from realsyn_spark.session import local_session_builder
    from realsyn_spark.stages.balance import rank_in_clusters
    from realsyn_spark.stages.export import write_webdataset
    from realsyn_spark.tables import BALANCED, Lake
    from udfs.shards import sample_members

    root = tempfile.mkdtemp(prefix="bench_export_")
    cfg = load_config(overrides=[f"lake.root={root}", "spark.shuffle_partitions=4", "export.samples_per_shard=1000"])
    spark = local_session_builder(cfg, master="local[2]").config("spark.driver.memory", "3g").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    lake = Lake(spark, cfg.lake)

    # ---- 1. scale views over `balanced`
    k = max(1, args.rows // 168)
    rng = np.random.default_rng(0)
    weights = 1.0 / np.arange(1, k + 1) ** 0.8   # Zipf-like cluster sizes, one cluster per ~168 images
    sizes = np.maximum(1, np.round(weights / weights.sum() * args.rows)).astype(int)
    ids = np.repeat(np.arange(k), sizes)[: args.rows]
    assigned = spark.createDataFrame(pd.DataFrame({"cluster_id": ids.astype("int32")})).withColumn(
        "image_id", F.format_string("%024x", F.monotonically_increasing_id()))
    ranked = rank_in_clusters(assigned, 0).select(
        "image_id", F.lit("bench").alias("request_hash"), F.lit(0.55).cast("float").alias("similarity"), F.lit(None).cast("string").alias("drop_reason"),
        "cluster_id", "cluster_size", "cluster_rank", F.lit(0.5).cast("float").alias("centroid_score"),
        F.lit("v").alias("centroid_version"), F.lit("r").alias("run_id"))
    t0 = time.perf_counter()
    lake.overwrite(BALANCED, ranked)
    print(f"balanced: {args.rows} rows in {k} clusters (largest {sizes.max()}), written in {time.perf_counter() - t0:.1f}s")
    scan, n = _timed(lambda: lake.read(BALANCED).count())
    print(f"baseline full scan count: {scan * 1e3:.0f} ms ({n} rows)")
    histogram = scales.size_histogram(lake.read(BALANCED))
    for cap in args.caps:
        view, rows = _timed(lambda: scales.scale_view(lake, cap=cap).count())
        expected = scales.rows_at_cap(histogram, cap)
        target, trows = _timed(lambda: scales.scale_view(lake, target=expected).count())
        print(f"cap {cap:>4}: view count {view * 1e3:.0f} ms ({rows} rows, {view / scan:.2f}x the scan); "
              f"target {expected} -> {target * 1e3:.0f} ms ({trows} rows, {target / scan:.2f}x, incl. histogram)")

    # ---- 2. WebDataset export throughput
    images = _jpegs(args.images)
    frame = pd.DataFrame({"image_id": [f"{i:024x}" for i in range(args.images)], "image_bytes": images,
                          "raw_image_url": [f"https://example.org/{i}.jpg" for i in range(args.images)],
                          "text1": [f"a sentence about image {i} and its contents" for i in range(args.images)],
                          "syn_text": [f"a synthetic caption of image {i}" for i in range(args.images)],
                          "cluster_id": rng.integers(0, 100, args.images).astype("int32"),
                          "cluster_rank": rng.integers(1, 50, args.images).astype("int32")})
    dataset = spark.createDataFrame(frame).repartition(4).cache()
    dataset.count()
    megabytes = sum(len(b) for b in images) / 1e6
    wds_time, written = _timed(lambda: write_webdataset(spark, dataset, f"{root}/export/webdataset", cfg.export), 2)
    print(f"write_webdataset: {args.images} images ({megabytes:.1f} MB) in {wds_time:.2f}s = "
          f"{args.images / wds_time:.0f} images/s, {len(written)} shards")

    def bare():
        with tarfile.open(f"{root}/bare.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
            for row in frame.to_dict("records"):
                for name, data in sample_members(row, "text1"):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))

    bare_time, _ = _timed(bare, 2)
    print(f"baseline bare tarfile loop (one process, rows on the driver): {args.images / bare_time:.0f} images/s; "
          f"Spark export = {bare_time / wds_time:.2f}x of it")
    spark.stop()


if __name__ == "__main__":
    main()
