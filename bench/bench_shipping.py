"""Broadcast replacement under Spark Connect: a read-only float32 matrix shipped in the UDF closure
(`udfs.shipped.InClosure`) vs written once as .npy and read once per Python worker (`InFile`), at
sizes up to the largest centroid matrix the defaults produce for 0.84B sentences
(k = sqrt(n) = 28,983 clusters x 768 dims x 4 B = 89 MB; 59 MB at 512 dims).

Each measurement runs one job of `tasks` tasks that touches the matrix (sum of one column) and is
timed end to end on the client; the baseline is the same job shipping a 1 KiB matrix, measured in the
same run. Usage: PYTHONPATH=. python bench/bench_shipping.py [--remote local[2]] [--tasks 8]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import pandas as pd

from udfs.shipped import InClosure, InFile, save_arrays


def job(spark, holder, tasks: int) -> float:
    def run(batches):
        matrix = holder.value
        for frame in batches:
            yield pd.DataFrame({"id": frame["id"], "s": float(matrix[:, 0].sum())})
    started = time.perf_counter()
    spark.range(0, tasks, 1, tasks).mapInPandas(run, "id long, s double").collect()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--remote", default="local[2]")
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--sizes-mb", default="1,16,59,89")
    args = parser.parse_args()
    from pyspark.sql import SparkSession

    from realsyn_spark.config import load_config
    from realsyn_spark.session import local_options

    spark = SparkSession.builder.remote(args.remote).config(map=local_options(load_config())).getOrCreate()
    folder = tempfile.mkdtemp(prefix="bench-shipping-")
    tiny = np.ones((1, 256), np.float32)
    job(spark, InClosure(tiny), args.tasks)   # warm the Python workers
    base = min(job(spark, InClosure(tiny), args.tasks) for _ in range(2))
    print(f"baseline (1 KiB in closure, {args.tasks} tasks): {base:.2f} s")
    print(f"{'MB':>6} {'closure s':>10} {'file s':>8} {'closure/base':>13} {'file/base':>10} {'write s':>8}")
    for mb in (float(x) for x in args.sizes_mb.split(",")):
        rows = max(1, int(mb * 1e6 / (768 * 4)))
        matrix = np.random.default_rng(0).standard_normal((rows, 768), dtype=np.float32)
        try:
            closure = job(spark, InClosure(matrix), args.tasks)
        except Exception as exc:   # what fails first is the finding
            closure = float("nan")
            print(f"closure capture of {mb} MB failed: {type(exc).__name__}: {str(exc)[:200]}")
        started = time.perf_counter()
        uri = f"{folder}/m{mb}.npy"
        save_arrays(uri, matrix)
        write = time.perf_counter() - started
        per_file = job(spark, InFile(uri), args.tasks)
        print(f"{mb:>6.0f} {closure:>10.2f} {per_file:>8.2f} {closure / base:>13.1f} {per_file / base:>10.1f} {write:>8.2f}")
    spark.stop()


if __name__ == "__main__":
    main()
