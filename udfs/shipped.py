"""Read-only values handed to executor code without broadcast variables (Spark Connect has none).

Both holders expose `.value`, as a broadcast did, so UDF bodies do not care how a value travelled:
- `InClosure`: the value is pickled into the UDF closure (small arrays: tag matrices, centroids of a
  small run). Spark ships a closure once per task (it broadcasts large task binaries itself).
- `InFile`: the value was written once as an .npy file under shared storage; each Python worker loads
  it once (cached by URI for the worker's lifetime: Spark reuses Python workers), so a GB-sized
  centroid matrix is neither pickled into every task nor held by the driver twice.
"""
from __future__ import annotations

import io
import threading

import numpy as np

_CACHE: dict[str, object] = {}
_LOCK = threading.Lock()


class InClosure:
    def __init__(self, value):
        self.value = value


class InFile:
    def __init__(self, uri: str, tuple_of: int = 0):
        self.uri = uri
        self.tuple_of = tuple_of   # >0: the file holds that many arrays (np.savez), returned as a tuple

    @property
    def value(self):
        with _LOCK:
            cached = _CACHE.get(self.uri)
        if cached is None:
            cached = load_arrays(self.uri, self.tuple_of)
            with _LOCK:
                _CACHE[self.uri] = cached
        return cached


def load_arrays(uri: str, tuple_of: int = 0):
    from realsyn_spark.sources.fileio import open_input

    with open_input(uri) as stream:
        data = io.BytesIO(stream.read())
    if tuple_of:
        with np.load(data, allow_pickle=False) as archive:
            return tuple(archive[f"a{i}"] for i in range(tuple_of))
    return np.load(data, allow_pickle=False)


def save_arrays(uri: str, value) -> None:
    from realsyn_spark.sources.fileio import open_output

    buffer = io.BytesIO()
    if isinstance(value, tuple):
        np.savez(buffer, **{f"a{i}": np.asarray(v) for i, v in enumerate(value)})
    else:
        np.save(buffer, np.asarray(value), allow_pickle=False)
    with open_output(uri) as out:
        out.write(buffer.getvalue())
