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
