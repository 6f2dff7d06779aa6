"""Deterministic identifiers: the same input always gets the same id, so re-runs MERGE onto themselves."""
from __future__ import annotations

import hashlib


def stable_id(*parts: object, length: int = 24) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(repr(part).encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.hexdigest()[:length]
