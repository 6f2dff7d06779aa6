"""The one Spark session factory.

- A session already running (Databricks notebook, spark-submit on a cluster, a test fixture), Classic
  or Spark Connect, is taken as it is: the cluster's settings are never overridden.
- A Spark Connect URL (`SPARK_REMOTE`, else `spark.remote`) gives a Connect session: `sc://host:port`
  as it is, `local[N]` starts a local Connect server with the Delta jars and extension.
- Otherwise the embedded default is built: local mode, Delta's SQL extension and catalog, the cached
  Delta jars, shuffle partitions sized for a small machine.
"""
from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from realsyn_spark.config import RealSynConfig
from realsyn_spark.jars import resolve_jars

DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def launched_by_spark_submit() -> bool:
    # spark-submit starts the JVM first and hands Python the gateway port through this variable.
    return "PYSPARK_GATEWAY_PORT" in os.environ


def local_options(cfg: RealSynConfig) -> dict[str, str]:
    """Settings of the embedded default (also given to a local Spark Connect server)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    return {
        "spark.jars": ",".join(resolve_jars()),
        "spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions),
        "spark.driver.memory": cfg.spark.driver_memory,
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
        "spark.ui.enabled": "false",
        # Delta's MERGE/OPTIMIZE are happier with adaptive execution; small files coalesce.
        "spark.sql.adaptive.enabled": "true",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        # Delta reads its log state into 50 partitions by default: far too many tasks for small tables.
        "spark.databricks.delta.snapshotPartitions": str(cfg.spark.shuffle_partitions),
        **DELTA_CONF,
    }


def local_session_builder(cfg: RealSynConfig, master: str | None = None) -> SparkSession.Builder:
    """Builder of the embedded default; tests use it with their own master (e.g. local-cluster)."""
    options = local_options(cfg)
    return SparkSession.builder.master(master or cfg.spark.local_master).appName(cfg.spark.app_name).config(map=options)


def on_databricks() -> bool:
    # Every Databricks runtime, serverless included, sets this for the Python process it starts.
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


def active_session() -> SparkSession | None:
    """The running session, Classic or Connect. SparkSession.getActiveSession only looks for a Connect
    session once the process is in Connect mode (SPARK_CONNECT_MODE_ENABLED), so ask the Connect
    client too: a notebook's `spark` may have been made with `DatabricksSession` or `builder.remote`."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    try:
        from pyspark.sql.connect.session import SparkSession as ConnectSession
    except ImportError:  # Connect client dependencies not installed: no Connect session can exist
        return None
    return ConnectSession.getActiveSession()


def connect_url(cfg: RealSynConfig) -> str | None:
    return os.environ.get("SPARK_REMOTE") or cfg.spark.remote


def connect_session_builder(cfg: RealSynConfig, url: str) -> SparkSession.Builder:
    """A Connect builder; for `local[N]` the local server gets the settings of the embedded default."""
    builder = SparkSession.builder.remote(url).appName(cfg.spark.app_name)
    return builder.config(map=local_options(cfg)) if url.startswith("local") else builder


def get_spark(cfg: RealSynConfig) -> SparkSession:
    active = active_session()
    if active is not None:
        return active
    url = connect_url(cfg)
    if url:
        return connect_session_builder(cfg, url).getOrCreate()
    if launched_by_spark_submit() or on_databricks():
        # The cluster's own session (a Databricks wheel task on serverless is a Connect session; on a job
        # cluster a Classic one): its settings are left alone.
        return SparkSession.builder.appName(cfg.spark.app_name).getOrCreate()
    spark = local_session_builder(cfg).getOrCreate()
    spark.sparkContext.setLogLevel("WARN")  # the embedded default is Classic by construction
    return spark
