"""Two-level balance k-means (train + assign on Spark) vs flat FAISS k-means on the driver, same vectors.

    PYTHONPATH=$PWD python bench/bench_balance.py --sizes 500000 1000000 2000000 --dim 512

Prints per size: wall time of two-level train+assign, flat FAISS train+assign (skipped above
--flat-max), mean cosine to the assigned centroid for both, cluster-size quantiles, and the driver's
peak RSS (ru_maxrss) after each size.
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time

import numpy as np


def vectors(n, d, seed):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(max(1, n // 500), d)).astype(np.float32)
    x = means[rng.integers(0, len(means), n)] + 0.5 * rng.normal(size=(n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[500_000, 1_000_000, 2_000_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--flat-max", type=int, default=500_000)
    ap.add_argument("--iterations", type=int, default=10)
    args = ap.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    from realsyn_spark.clustering import train_kmeans
    from realsyn_spark.config import BalanceConfig, LakeConfig, load_config
    from realsyn_spark.session import local_session_builder
    from realsyn_spark.stages import balance
    from realsyn_spark.tables import BALANCED, Lake

    spark = local_session_builder(load_config(overrides=["spark.shuffle_partitions=4"]), master="local[2]") \
        .config("spark.driver.memory", "3g").getOrCreate()
    cfg = BalanceConfig(kmeans_iterations=args.iterations)
    work = tempfile.mkdtemp(prefix="bench_balance_")
    for n in args.sizes:
        x = vectors(n, args.dim, n)
        path = f"{work}/v{n}.parquet"
        flat_list = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), args.dim)
        pq.write_table(pa.table({"image_id": [f"i{i:09d}" for i in range(n)], "embedding": flat_list}), path,
                       row_group_size=50_000)
        banded = (spark.read.parquet(path).withColumn("embedding", F.col("embedding").cast("array<float>"))
                  .withColumn("similarity", F.lit(0.5).cast("float")).withColumn("drop_reason", F.lit(None).cast("string")))
        lake = Lake(spark, LakeConfig(root=f"{work}/lake{n}"))
        t0 = time.perf_counter()
        coarse = balance.train_two_level(spark, lake, banded, n, cfg, "m", f"v{n}")
        t1 = time.perf_counter()
        balance.full_build(lake, banded, banded, f"v{n}", coarse, cfg, "bench")
        t2 = time.perf_counter()
        stats = lake.read(BALANCED).agg(F.avg("centroid_score"), F.countDistinct("cluster_id")).first()
        sizes = np.array([r["count"] for r in lake.read(BALANCED).groupBy("cluster_id").count().collect()])
        t3 = time.perf_counter()
        view = lake.read(BALANCED).where("cluster_rank <= 20").count()
        t4 = time.perf_counter()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"n={n} k={stats[1]} k1={len(coarse)} two-level train {t1 - t0:.1f}s assign+rank {t2 - t1:.1f}s "
              f"mean_cos {stats[0]:.4f} sizes p50/p99/max {np.percentile(sizes, 50):.0f}/"
              f"{np.percentile(sizes, 99):.0f}/{sizes.max()} cap20 view {view} rows in {t4 - t3:.2f}s "
              f"driver peak RSS {rss:.0f} MiB", flush=True)
        if n <= args.flat_max:
            t0 = time.perf_counter()
            flat = train_kmeans(x, int(stats[1]), args.iterations, 0)
            from udfs.retrieval import exact_top_k
            score, idx = exact_top_k(x, flat, 1)
            t1 = time.perf_counter()
            fs = np.bincount(idx[:, 0], minlength=len(flat))
            print(f"n={n} flat FAISS k={len(flat)} train+assign {t1 - t0:.1f}s mean_cos {score.mean():.4f} "
                  f"sizes p50/p99/max {np.percentile(fs, 50):.0f}/{np.percentile(fs, 99):.0f}/{fs.max()}", flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
