"""Perceptual hashes of encoded images inside executors (imagehash pHash, 64 bits).

Hashes are taken on the upright 8-bit RGB pixels (`udfs.pixels.decode_rgb`). Two views per image: the whole image, and its central crop (`core_fraction` of each side), which a corner
watermark or a thin border crop barely changes. Hashes are returned as signed 64-bit integers (Spark
`bigint`); an image that does not decode gets nulls.
"""
from __future__ import annotations

import logging
from typing import Iterator

import numpy as np
import pandas as pd

from udfs.pixels import decode_rgb

log = logging.getLogger("realsyn.udfs")

HASH_BITS = 64


# Names the decode the hashes are taken on: ":up8" = upright (EXIF orientation applied), 8-bit scaled,
# transparency on white (udfs.pixels). Hashes stored under the older kinds (without it) were taken on
# unrotated pixels and are recomputed, not mixed with these, by the next extract run.
_DECODE_VERSION = ":up8"


def hash_kind(core_fraction: float | None) -> str:
    """Identifies the hash parameters, so hashes made with other settings are never mixed."""
    base = "phash8" + _DECODE_VERSION
    return base if core_fraction is None else f"{base}+core{core_fraction:.3f}"


def to_signed64(value: int) -> int:
    return value - (1 << 64) if value >= (1 << 63) else value


def _phash_int(image) -> int:
    import imagehash

    bits = imagehash.phash(image, hash_size=8).hash.flatten()
    return to_signed64(int("".join("1" if b else "0" for b in bits), 2))


def core_crop(image, fraction: float):
    width, height = image.size
    dx, dy = int(width * (1 - fraction) / 2), int(height * (1 - fraction) / 2)
    if fraction >= 1.0 or width - 2 * dx < 8 or height - 2 * dy < 8:
        return image
    return image.crop((dx, dy, width - dx, height - dy))


def phash_views(data: bytes, core_fraction: float | None) -> tuple[int | None, int | None]:
    """(pHash of the whole image, pHash of its central crop or None), on the upright 8-bit RGB pixels
    (udfs.pixels.decode_rgb): rotated copies of one photo hash alike."""
    try:
        img = decode_rgb(data)
        full = _phash_int(img)
        core = _phash_int(core_crop(img, core_fraction)) if core_fraction is not None else None
        return full, core
    except Exception as exc:  # undecodable bytes are not fatal: the hash is null
        log.warning("image not decodable for pHash: %s", exc)
        return None, None


def phash_mapper(core_fraction: float | None):
    """mapInPandas body: (sha256, image_bytes) -> (sha256, phash, phash_core)."""
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in batches:
            pairs = [phash_views(b, core_fraction) if b is not None else (None, None)
                     for b in frame["image_bytes"]]
            yield pd.DataFrame({
                "sha256": frame["sha256"].to_numpy(),
                "phash": pd.array([p[0] for p in pairs], dtype="Int64"),
                "phash_core": pd.array([p[1] for p in pairs], dtype="Int64"),
            })
    return run


def block_masks(n_blocks: int, bits: int = HASH_BITS) -> list[int]:
    """Contiguous bit blocks of (nearly) equal size covering all `bits` bits."""
    sizes = [bits // n_blocks + (1 if i < bits % n_blocks else 0) for i in range(n_blocks)]
    masks, shift = [], 0
    for size in sizes:
        masks.append(((1 << size) - 1) << shift)
        shift += size
    return masks


def key_masks(n_blocks: int, key_blocks: int) -> list[int]:
    """One signed 64-bit mask per LSH table: every combination of `key_blocks` of the blocks.

    Two hashes within d bits differ in at most d blocks, so if d <= n_blocks - key_blocks they agree on
    all blocks of at least one combination and share that table's key (the multi-index / permuted-table
    argument of Manku et al. 2007); larger distances are found with high probability.
    """
    from itertools import combinations

    return [to_signed64(sum(combo)) for combo in combinations(block_masks(n_blocks), key_blocks)]


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x = (a.astype(np.int64) ^ b.astype(np.int64)).view(np.uint64)
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
