"""Driver-side file operations on any Hadoop path (local, dbfs:, s3a://, abfss://, hdfs://) through the
JVM's FileSystem, the one Spark and Delta themselves use, so the cluster's credentials apply."""
from __future__ import annotations

from pyspark.sql import SparkSession


def _fs_and_path(spark: SparkSession, uri: str):
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), path


def delete(spark: SparkSession, uri: str) -> None:
    """Delete a file or a folder with everything in it; nothing to do when absent."""
    fs, path = _fs_and_path(spark, uri)
    if fs.exists(path):
        fs.delete(path, True)


def rename(spark: SparkSession, source: str, target: str) -> None:
    """Move a folder (atomic on HDFS and local disks; a copy on object stores). The target must not exist."""
    fs, path = _fs_and_path(spark, source)
    target_path = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(target)
    fs.mkdirs(target_path.getParent())
    if not fs.rename(path, target_path):
        raise OSError(f"could not rename {source} to {target}")


def qualified(spark: SparkSession, uri: str) -> str:
    """The fully qualified form (`file:/x`, `s3a://b/k`) executors get, so they agree with the driver."""
    fs, path = _fs_and_path(spark, uri)
    return str(fs.makeQualified(path).toString())
