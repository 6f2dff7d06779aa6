"""fileio (no Spark): local paths and file: URIs open, Hadoop URIs map to pyarrow paths."""
from __future__ import annotations

import pytest

from realsyn_spark.sources import fileio
from tests.source_fixtures import write


def test_fileio_opens_local_paths_and_file_uris(tmp_path):
    path = write(tmp_path, "a b.bin", b"0123456789")
    for uri in (path, "file:" + path.replace(" ", "%20"), "file://" + path.replace(" ", "%20")):
        with fileio.open_input(uri) as stream:
            stream.seek(3)
            assert stream.read(4) == b"3456"
        assert fileio.file_size(uri) == 10
        with fileio.local_file(uri) as local:
            assert local == path
    assert fileio.is_local("dbfs:/mnt/x") and not fileio.is_local("s3a://bucket/key")


@pytest.mark.parametrize("uri, scheme, path", [
    ("s3a://bucket/dir/a%20b.warc.gz", "s3", "bucket/dir/a b.warc.gz"),
    ("gs://bucket/k.pdf", "gs", "bucket/k.pdf"),
    ("abfss://container@account.dfs.core.windows.net/dir/x.warc", "abfss", "container/dir/x.warc"),
    ("hdfs://namenode:8020/data/x.jsonl", "hdfs", "/data/x.jsonl"),
])
def test_fileio_maps_hadoop_uris_to_pyarrow_paths(uri, scheme, path):
    from urllib.parse import urlsplit  # no filesystem is created: that would contact the store

    parts = urlsplit(uri)
    assert fileio._path_in(fileio._SCHEME_ALIASES.get(parts.scheme, parts.scheme), parts) == path
    assert fileio._SCHEME_ALIASES.get(parts.scheme, parts.scheme) == scheme
