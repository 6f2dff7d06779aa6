"""Two-level balance k-means (train + assign on Spark) vs flat FAISS k-means on the driver, same vectors.

    PYTHONPATH=$PWD python bench/bench_balance.py --sizes 500000 1000000 2000000 --flat-max 500000

Data: d-dim unit vectors with a topic hierarchy, made in chunks of --chunk rows (seed per chunk, so the
driver never holds the whole set) and written to Parquet under --work-dir: 64 super-topics (random unit
means), n/500 topics = super-topic + noise (cosine ~0.7 to it), image = topic + noise (cosine ~0.8 to
its topic). k = n / images_per_cluster (168: the paper's 1M clusters for 168M images).

Per size it times, from the Parquet file to the written Delta table: `balance.train_two_level` (coarse
k-means on the driver, per-cell fine k-means in applyInArrow tasks, centroids written to Delta) and
`balance.full_build` (probe, cogroup assignment, ranks, `balanced` written). Then, for sizes up to
--flat-max, flat FAISS spherical k-means with the same k and iterations on the driver over all vectors
plus exact assignment (the "before" design, same process, same data). Quality for both: mean cosine to
the assigned centroid, cluster-size quantiles.

Memory: a thread samples every 0.2 s the RSS of this Python driver process, of the Spark JVM (the
driver JVM; in local mode the executors live in it) and of the Python workers (children of the JVM),
and prints the peak of each over each phase, with the driver's RSS before the phase.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

SUPER_TOPICS = 64


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def topics(n, d, seed):
    rng = np.random.default_rng(seed)
    supers = _unit(rng.normal(size=(SUPER_TOPICS, d)))
    t = max(1, n // 500)
    return _unit(supers[rng.integers(0, SUPER_TOPICS, t)] + 1.0 * rng.normal(size=(t, d)) / np.sqrt(d))


def chunk_vectors(means, rows, d, seed):
    rng = np.random.default_rng(seed)
    return _unit(means[rng.integers(0, len(means), rows)] + 0.75 * rng.normal(size=(rows, d)).astype(np.float32)
                 / np.sqrt(d))


def write_vectors(path, n, d, chunk, seed):
    """Parquet of (image_id, embedding) written chunk by chunk; reused when present."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if os.path.exists(path):
        return
    means = topics(n, d, seed)
    schema = pa.schema([("image_id", pa.string()), ("embedding", pa.list_(pa.float32()))])
    with pq.ParquetWriter(path + ".tmp", schema) as writer:
        for start in range(0, n, chunk):
            rows = min(chunk, n - start)
            x = chunk_vectors(means, rows, d, seed * 1_000_003 + start)
            offsets = pa.array(np.arange(0, (rows + 1) * d, d, dtype=np.int32))
            emb = pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1)))
            writer.write_table(pa.table({"image_id": [f"i{i:09d}" for i in range(start, start + rows)],
                                         "embedding": emb}, schema=schema), row_group_size=chunk)
    os.rename(path + ".tmp", path)


def read_vectors(path):
    import pyarrow.parquet as pq

    from udfs.retrieval import arrow_vectors

    return arrow_vectors(pq.read_table(path, columns=["embedding"]).column("embedding"))


class Peak:
    """Peak RSS (MiB) of the driver, the JVM and the Python workers while the block runs."""

    def __init__(self):
        import psutil

        self.me = psutil.Process()

    def _jvm(self):
        return [c for c in self.me.children() if "java" in c.name()]

    def sample(self):
        drv = self.me.memory_info().rss
        jvm = workers = 0
        for j in self._jvm():
            try:
                jvm += j.memory_info().rss
                for w in j.children(recursive=True):
                    try:
                        workers += w.memory_info().rss
                    except Exception:
                        pass
            except Exception:
                pass
        return drv / 2**20, jvm / 2**20, workers / 2**20

    def __enter__(self):
        self.before = self.sample()
        self.peak = list(self.before)
        self._stop = threading.Event()

        def loop():
            while not self._stop.wait(0.2):
                self.peak = [max(a, b) for a, b in zip(self.peak, self.sample())]
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def line(self):
        return (f"driver python RSS {self.before[0]:.0f} -> peak {self.peak[0]:.0f} MiB, JVM peak "
                f"{self.peak[1]:.0f} MiB, python workers peak (sum) {self.peak[2]:.0f} MiB")


def quantiles(sizes):
    q = np.percentile(sizes, [1, 50, 99])
    return f"p1/p50/p99/max {q[0]:.0f}/{q[1]:.0f}/{q[2]:.0f}/{sizes.max()}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[500_000, 1_000_000, 2_000_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--flat-max", type=int, default=500_000)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--chunk", type=int, default=100_000)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--driver-memory", default="3g")
    ap.add_argument("--work-dir", default=None)
    args = ap.parse_args()

    from pyspark.sql import functions as F

    from realsyn_spark.clustering import auto_clusters, train_kmeans
    from realsyn_spark.config import BalanceConfig, LakeConfig, load_config
    from realsyn_spark.session import local_session_builder
    from realsyn_spark.stages import balance
    from realsyn_spark.tables import BALANCE_CENTROIDS, BALANCED, Lake
    from udfs.retrieval import exact_top_k

    work = args.work_dir or tempfile.mkdtemp(prefix="bench_balance_")
    os.makedirs(work, exist_ok=True)
    cfg = BalanceConfig(kmeans_iterations=args.iterations)
    spark = (local_session_builder(load_config(overrides=["spark.shuffle_partitions=4"]), master=args.master)
             .config("spark.driver.memory", args.driver_memory).getOrCreate())
    print(f"work dir {work}; cores {os.cpu_count()}; master {args.master}; driver memory {args.driver_memory}; "
          f"iterations {args.iterations}; coarse_probe {cfg.coarse_probe}; fine_points_per_cluster "
          f"{cfg.fine_points_per_cluster}", flush=True)
    growth = []
    for n in args.sizes:
        path = f"{work}/v{n}_d{args.dim}.parquet"
        t = time.perf_counter()
        write_vectors(path, n, args.dim, args.chunk, seed=n % 9973)
        print(f"n={n} data ready in {time.perf_counter() - t:.1f}s", flush=True)
        banded = (spark.read.parquet(path).withColumn("request_hash", F.lit("bench"))
                  .withColumn("similarity", F.lit(0.5).cast("float"))
                  .withColumn("drop_reason", F.lit(None).cast("string")))
        lake = Lake(spark, LakeConfig(root=f"{work}/lake{n}"))
        version = f"v{n}-{time.time_ns()}"
        with Peak() as mem:
            t0 = time.perf_counter()
            coarse = balance.train_two_level(spark, lake, banded, n, cfg, "m", version)
            t1 = time.perf_counter()
            balance.full_build(lake, banded, banded, version, coarse, cfg, "bench")
            t2 = time.perf_counter()
        k_target = auto_clusters(n, cfg.images_per_cluster, cfg.n_clusters)
        k_fine = lake.read(BALANCE_CENTROIDS).where(F.col("version") == version).where("level = 'fine'").count()
        stats = lake.read(BALANCED).agg(F.avg("centroid_score"), F.countDistinct("cluster_id"), F.count("*")).first()
        sizes = np.array([r["count"] for r in lake.read(BALANCED).groupBy("cluster_id").count().collect()])
        t3 = time.perf_counter()
        view = lake.read(BALANCED).where("cluster_rank <= 20").count()
        t4 = time.perf_counter()
        growth.append((n, t2 - t0))
        print(f"n={n} k={k_target} (fine centroids {k_fine}, non-empty {stats[1]}) k1={len(coarse)} "
              f"two-level train {t1 - t0:.1f}s assign+rank+write {t2 - t1:.1f}s total {t2 - t0:.1f}s | "
              f"rows {stats[2]} mean_cos {stats[0]:.4f} sizes {quantiles(sizes)} | cap20 view {view} rows "
              f"in {t4 - t3:.2f}s | {mem.line()} | load avg {os.getloadavg()[0]:.1f}", flush=True)
        if n <= args.flat_max:
            x = read_vectors(path)
            with Peak() as mem:
                t0 = time.perf_counter()
                flat = train_kmeans(x, k_fine, args.iterations, 0)
                t1 = time.perf_counter()
                score, idx = exact_top_k(x, flat, 1)
                t2 = time.perf_counter()
            fs = np.bincount(idx[:, 0], minlength=len(flat))
            print(f"n={n} flat FAISS k={len(flat)} train {t1 - t0:.1f}s assign {t2 - t1:.1f}s total "
                  f"{t2 - t0:.1f}s | mean_cos {score.mean():.4f} sizes {quantiles(fs)} "
                  f"(non-empty {int((fs > 0).sum())}) | {mem.line()} | load avg {os.getloadavg()[0]:.1f}", flush=True)
            del x
    for (n0, t0), (n1, t1) in zip(growth, growth[1:]):
        print(f"growth {n0} -> {n1}: size x{n1 / n0:.2f}, two-level time x{t1 / t0:.2f}", flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
