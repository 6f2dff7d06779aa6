"""Driver-side file operations on local paths and object-store URIs (file:, dbfs:, s3(a)://, gs://,
abfss://, hdfs://) through `pyarrow.fs`, the same layer executors read and write with
(`sources.fileio`). No JVM access, so it works under Spark Connect as under Classic; credentials come
from pyarrow's usual environment (AWS_* variables, instance profiles, Azure/GCS defaults)."""
from __future__ import annotations

import os

from pyspark.sql import SparkSession

from realsyn_spark.sources import fileio


def _fs_and_path(uri: str):
    from pyarrow import fs as pafs

    local = fileio._local_path(uri)
    if local is not None:
        return pafs.LocalFileSystem(), os.path.abspath(local)
    return fileio._remote(uri)


def delete(spark: SparkSession | None, uri: str) -> None:
    """Delete a file or a folder with everything in it; nothing to do when absent."""
    from pyarrow import fs as pafs

    filesystem, path = _fs_and_path(uri)
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        filesystem.delete_dir(path)
    elif info.type != pafs.FileType.NotFound:
        filesystem.delete_file(path)


def rename(spark: SparkSession | None, source: str, target: str) -> None:
    """Move a folder (atomic on local disks and HDFS; a copy then delete on object stores, which have
    no rename). The target must not exist."""
    from pyarrow import fs as pafs

    filesystem, path = _fs_and_path(source)
    _, target_path = _fs_and_path(target)
    if filesystem.get_file_info(target_path).type != pafs.FileType.NotFound:
        raise OSError(f"could not rename {source} to {target}: the target exists")
    parent = target_path.rstrip("/").rsplit("/", 1)[0]
    if parent:
        filesystem.create_dir(parent, recursive=True)
    try:
        filesystem.move(path, target_path)
    except (NotImplementedError, OSError):   # object stores: no directory move
        pafs.copy_files(path, target_path, source_filesystem=filesystem, destination_filesystem=filesystem)
        filesystem.delete_dir(path)


def qualified(spark: SparkSession | None, uri: str) -> str:
    """The form executors get, so they agree with the driver: local paths absolute, URIs as given."""
    local = fileio._local_path(uri)
    if local is not None and local == uri:
        return os.path.abspath(uri)
    return uri
