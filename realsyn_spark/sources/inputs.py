"""Driver-side listing of the input folders: every file, whatever its name, on local disks and object
stores, through `os.scandir` / `pyarrow.fs` (no JVM: works under Spark Connect as under Classic).

Each file gets one URI that executors open with `fileio.open_input`: `file:` + the percent-encoded
path for local files (raw bytes of the name, so spaces, `%`, `#`, `?`, newlines, non-ASCII and even
names that are not valid UTF-8 round-trip exactly), `<scheme>://<authority>/<percent-encoded key>` on
object stores. For ordinary names the URI is what Hadoop writes (`file:/data/x.warc.gz`).

Files a saved page loads (its images, style sheets, scripts: `page_files/` of a "save page as") are page
resources, not documents: the fetch stage reads them through the page's relative URLs; they are counted
(`files_page_resources`), not quarantined, so the quarantine is not flooded with a crawl's own images.
Nothing else is skipped silently: files whose suffix names no parser are `unsupported_file`, entries that
cannot be stat'ed (broken links, permission denied, vanished) are `unreadable_file`; both are
quarantined by the ingest stage. Hidden entries (names starting with `.` or `_`: `_SUCCESS`,
`.crc`, `_delta_log`) are left out, as Spark's own file sources leave them out.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from realsyn_spark.sources import fileio
from realsyn_spark.sources.detect import SUFFIXES, detect_kind

# RFC 3986 sub-delimiters and ':' '@' are legal in a URI path and left as they are (Hadoop's form for
# ordinary names); everything else outside unreserved characters is percent-encoded.
_SAFE = "/:@!$&'()*+,;=~"


@dataclass(frozen=True)
class InputFile:
    uri: str
    size: int
    modified_ms: int
    kind: str


@dataclass(frozen=True)
class Rejected:
    uri: str
    kind: str     # unsupported_file | unreadable_file
    reason: str


# Suffixes of what a saved HTML page embeds or loads (lower case).
PAGE_RESOURCE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".avif", ".heic",
                          ".svg", ".ico", ".css", ".js")


@dataclass
class Scan:
    files: list[InputFile] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    page_resources: int = 0


def local_uri(path: str) -> str:
    """`file:` URI of a local path; the name's raw bytes are percent-encoded (see fileio._local_path)."""
    return "file:" + quote(os.fsencode(os.path.abspath(path)), safe=_SAFE)


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _classify(scan: Scan, uri: str, name: str, size: int, modified_ms: int) -> None:
    kind = detect_kind(name)
    if kind is None and name.lower().endswith(PAGE_RESOURCE_SUFFIXES):
        scan.page_resources += 1
    elif kind is None:
        scan.rejected.append(Rejected(uri, "unsupported_file",
                                      f"no parser for this file name; supported suffixes: {', '.join(SUFFIXES)}"))
    else:
        scan.files.append(InputFile(uri, size, modified_ms, kind))


def _scan_local(scan: Scan, root: str) -> None:
    try:
        info = os.stat(root)
    except FileNotFoundError:
        raise FileNotFoundError(f"input path does not exist: {root}") from None
    if not stat.S_ISDIR(info.st_mode):
        _classify(scan, local_uri(root), os.path.basename(root), info.st_size, info.st_mtime_ns // 1_000_000)
        return
    pending = [root]
    visited = {(info.st_dev, info.st_ino)}   # a link back to a parent folder is listed once, not forever
    while pending:
        folder = pending.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            scan.rejected.append(Rejected(local_uri(folder), "unreadable_file", f"cannot list folder: {exc.strerror}"))
            continue
        for entry in entries:
            if _hidden(entry.name):
                continue
            try:
                info = entry.stat()   # follows links: a link to a file is that file
            except OSError as exc:
                scan.rejected.append(Rejected(local_uri(entry.path), "unreadable_file",
                                              f"cannot stat: {exc.strerror or type(exc).__name__}"))
                continue
            if stat.S_ISDIR(info.st_mode):
                if (info.st_dev, info.st_ino) not in visited:
                    visited.add((info.st_dev, info.st_ino))
                    pending.append(entry.path)
            elif stat.S_ISREG(info.st_mode):
                _classify(scan, local_uri(entry.path), entry.name, info.st_size, info.st_mtime_ns // 1_000_000)
            else:
                scan.rejected.append(Rejected(local_uri(entry.path), "unreadable_file", "not a regular file"))


def _scan_remote(scan: Scan, root: str) -> None:
    from pyarrow import fs as pafs

    parts = urlsplit(root)
    filesystem, path = fileio._remote(root)
    prefix = fileio._path_in(fileio._SCHEME_ALIASES.get(parts.scheme.lower(), parts.scheme.lower()),
                             urlsplit(f"{parts.scheme}://{parts.netloc}/")).rstrip("/")
    base = f"{parts.scheme}://{parts.netloc}"
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"input path does not exist: {root}")
    infos = [info] if info.type == pafs.FileType.File else \
        filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    for item in sorted(infos, key=lambda i: i.path):
        if item.type != pafs.FileType.File:
            continue
        relative = item.path[len(path):] if item.path != path else ""
        if any(_hidden(p) for p in relative.split("/") if p):
            continue
        key = item.path[len(prefix):]
        uri = base + quote(key if key.startswith("/") else "/" + key, safe=_SAFE)
        mtime = item.mtime_ns // 1_000_000 if item.mtime_ns is not None else 0
        _classify(scan, uri, item.base_name, int(item.size or 0), mtime)


def scan_inputs(paths: list[str]) -> Scan:
    """Every file under `paths` (files or folders, recursive), sorted, each once."""
    scan = Scan()
    for root in paths:
        if fileio.is_local(root):
            _scan_local(scan, fileio._local_path(root))
        else:
            _scan_remote(scan, root)
    seen: set[str] = set()
    scan.files = [f for f in scan.files if not (f.uri in seen or seen.add(f.uri))]
    scan.rejected = [r for r in scan.rejected if not (r.uri in seen or seen.add(r.uri))]
    return scan
