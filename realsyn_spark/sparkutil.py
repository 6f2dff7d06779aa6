"""Small Spark helpers shared by stages."""
from __future__ import annotations

from contextlib import contextmanager

from pyspark.sql import SparkSession


@contextmanager
def arrow_batch_rows(spark: SparkSession, rows: int):
    """Bound the rows per Arrow batch handed to the UDF (image bytes!), restoring the session's value."""
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    previous = spark.conf.get(key, None)
    spark.conf.set(key, str(rows))
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)


def parallelism(spark: SparkSession) -> int:
    """Tasks to cut work into: the session's shuffle partitions (from `spark.shuffle_partitions` in the
    embedded default, the cluster's own setting otherwise). Spark Connect has no defaultParallelism."""
    try:
        return max(1, int(spark.conf.get("spark.sql.shuffle.partitions", "8")))
    except ValueError:   # "auto" on Databricks
        return 8


def ship(value, lake_root: str, closure_max_bytes: int, name: str):
    """A `.value` holder for a read-only array (or tuple of arrays) that executor code needs: in the UDF
    closure when small, else written once under `<lake_root>/_shipped/` (named by content hash, so a
    rerun reuses it) and read once per Python worker. Works under Classic and Spark Connect alike."""
    import hashlib

    import numpy as np

    from udfs.shipped import InClosure, InFile, save_arrays

    arrays = value if isinstance(value, tuple) else (value,)
    size = sum(np.asarray(a).nbytes for a in arrays)
    if size <= closure_max_bytes:
        return InClosure(value)
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(str((a.dtype.str, a.shape)).encode())
        digest.update(a.tobytes() if a.dtype != object else repr(a.tolist()).encode())
    uri = f"{lake_root.rstrip('/')}/_shipped/{name}-{digest.hexdigest()[:24]}.{'npz' if isinstance(value, tuple) else 'npy'}"
    from realsyn_spark.sources.fileio import file_size

    try:
        file_size(uri)
    except (FileNotFoundError, OSError):
        save_arrays(uri, value)
    return InFile(uri, len(value) if isinstance(value, tuple) else 0)


def input_partitions(df) -> int:
    """Non-empty partitions of `df` (Connect has no `df.rdd.getNumPartitions()`); one light pass."""
    from pyspark.sql import functions as F

    return max(1, df.select(F.spark_partition_id().alias("p")).distinct().count())
