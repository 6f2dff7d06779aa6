"""Open input files by URI on executors, streaming from storage: local paths, file:, s3://, gs://, abfss://, hdfs://.

Spark lists files as Hadoop URIs (`file:/data/x.warc.gz`, `s3a://bucket/key`, `dbfs:/mnt/x`); executors
read them through `pyarrow.fs`, never through Spark's `binaryFile` content column (which holds a whole
file in memory and stops at 2 GB). Every open file is seekable and buffered, so a split can start in
the middle of a file and a parser can resynchronise after a corrupt record without reading the whole file.

Scheme mapping (Hadoop name -> pyarrow): `s3a://`/`s3n://` -> `s3://`; `dbfs:/x` -> the `/dbfs/x` FUSE
mount (Databricks); `abfs(s)://` and `gs://` and `hdfs://` as they are (hdfs needs libhdfs and a JVM
on the executor, as on EMR). pyarrow takes credentials from its usual environment (AWS_* variables,
instance profiles, Azure/GCS defaults). Filesystems are cached per scheme and authority in the worker.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from typing import BinaryIO, Iterator
from urllib.parse import unquote, unquote_to_bytes, urlsplit

READ_BUFFER_BYTES = 1 << 20   # one ranged read per MiB on object stores, not one per warcio block
HASH_CHUNK_BYTES = 4 << 20

_FS_CACHE: dict[tuple[str, str], object] = {}
_FS_LOCK = threading.Lock()
_SCHEME_ALIASES = {"s3a": "s3", "s3n": "s3"}


def _local_path(uri: str) -> str | None:
    """The local filesystem path of `uri`, or None when it lives on a remote store."""
    if "://" not in uri and not uri.startswith(("file:", "dbfs:")):
        return uri  # a plain path
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return _decoded(parts.path)
    if scheme == "dbfs":  # Databricks: every executor mounts DBFS under /dbfs
        return "/dbfs" + _decoded(parts.path if parts.path.startswith("/") else "/" + parts.path)
    if len(scheme) == 1:  # a Windows drive letter, "C:\\data\\x.warc"
        return uri
    return None


def _decoded(path: str) -> str:
    """A percent-encoded URI path as the OS names it: the escapes are the name's raw bytes
    (`inputs.local_uri`), so a name that is not valid UTF-8 still opens."""
    return os.fsdecode(unquote_to_bytes(path))


def _remote(uri: str):
    """(pyarrow FileSystem, path inside it) for a remote URI; the filesystem is cached per authority."""
    from pyarrow import fs as pafs

    parts = urlsplit(uri)
    scheme = _SCHEME_ALIASES.get(parts.scheme.lower(), parts.scheme.lower())
    normalised = uri if scheme == parts.scheme.lower() else scheme + uri[len(parts.scheme):]
    key = (scheme, parts.netloc)
    with _FS_LOCK:
        filesystem = _FS_CACHE.get(key)
    if filesystem is None:
        filesystem, _ = pafs.FileSystem.from_uri(normalised)
        with _FS_LOCK:
            _FS_CACHE[key] = filesystem
    return filesystem, _path_in(scheme, parts)


def _path_in(scheme: str, parts) -> str:
    # pyarrow paths: "bucket/key" (s3, gs), "container/path" (abfs: container@account), "/path" (hdfs)
    if scheme == "hdfs":
        return unquote(parts.path)
    if scheme in ("abfs", "abfss"):
        container = parts.netloc.split("@", 1)[0]
        return container + unquote(parts.path)
    return parts.netloc + unquote(parts.path)


def is_local(uri: str) -> bool:
    return _local_path(uri) is not None


def open_input(uri: str, buffer_size: int = READ_BUFFER_BYTES) -> BinaryIO:
    """A seekable, buffered binary stream of the file at `uri`. Raises FileNotFoundError/OSError."""
    local = _local_path(uri)
    if local is not None:
        return open(local, "rb", buffering=buffer_size)
    filesystem, path = _remote(uri)
    return io.BufferedReader(filesystem.open_input_file(path), buffer_size=buffer_size)


def file_size(uri: str) -> int:
    local = _local_path(uri)
    if local is not None:
        return os.path.getsize(local)
    from pyarrow import fs as pafs

    filesystem, path = _remote(uri)
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(uri)
    return info.size


def sha256_of(stream: BinaryIO) -> str:
    """Hex digest of a whole stream, read in chunks (memory stays flat); leaves it at position 0."""
    stream.seek(0)
    digest = hashlib.sha256()
    while True:
        chunk = stream.read(HASH_CHUNK_BYTES)
        if not chunk:
            break
        digest.update(chunk)
    stream.seek(0)
    return digest.hexdigest()


@contextmanager
def local_file(uri: str) -> Iterator[str]:
    """A local path holding the file: the file itself when local, else a streamed temporary copy.

    For readers that need a real file (MuPDF opens PDFs by name and reads objects on demand)."""
    local = _local_path(uri)
    if local is not None:
        yield local
        return
    handle, temp_path = tempfile.mkstemp(prefix="realsyn-", suffix=os.path.splitext(urlsplit(uri).path)[1])
    try:
        with os.fdopen(handle, "wb") as out, open_input(uri) as source:
            shutil.copyfileobj(source, out, HASH_CHUNK_BYTES)
        yield temp_path
    finally:
        try:
            os.unlink(temp_path)
        except OSError:
            pass


def open_output(uri: str) -> BinaryIO:
    """A new binary file at `uri` (parent folders made on local disks); on object stores the object
    appears when the stream is closed. Callers that need all-or-nothing write under a staging folder."""
    local = _local_path(uri)
    if local is not None:
        os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
        return open(local, "wb")
    filesystem, path = _remote(uri)
    return filesystem.open_output_stream(path)
