"""CLIP token counts of texts, in executors (the dataset card's tokens-per-text figures).

The tokenizer is CLIP's byte-pair encoder as open_clip ships it (`open_clip.tokenizer.SimpleTokenizer`:
its vocabulary is inside the package, so it works offline). A text's count is its BPE tokens plus the
start and end tokens, capped at CLIP's context length of 77: the length the text encoder sees, which is
why the paper's token histograms (Fig. 6) end in a spike at 77.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import pandas as pd

CONTEXT_LENGTH = 77
TOKENS_SCHEMA = "image_id string, cluster_rank int, kind string, tokens int"

_tokenizer = None


def _encoder():
    global _tokenizer
    if _tokenizer is None:   # one vocabulary load per Python worker
        from open_clip.tokenizer import SimpleTokenizer

        _tokenizer = SimpleTokenizer()
    return _tokenizer


def token_counts(texts: Iterable) -> list:
    """CLIP tokens per text (None for a missing text: None or pandas' NaN)."""
    encoder = _encoder()
    return [None if not isinstance(t, str) else min(len(encoder.encode(t)) + 2, CONTEXT_LENGTH) for t in texts]


def token_counter(kinds: Sequence[str]):
    """mapInPandas body: rows (image_id, cluster_rank (not null), <kinds>...) -> one row per present
    text (image_id, cluster_rank, kind, tokens)."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            ids, ranks = batch["image_id"].tolist(), batch["cluster_rank"].tolist()
            # Built from Python lists, not by concatenating slices of `batch`: pandas 3's Arrow-backed
            # strings would concatenate into chunked arrays, which Spark's Arrow writer rejects.
            rows = [(i, int(r), kind, n) for kind in kinds
                    for i, r, n in zip(ids, ranks, token_counts(batch[kind].tolist())) if n is not None]
            out = pd.DataFrame(rows, columns=["image_id", "cluster_rank", "kind", "tokens"])
            yield out.astype({"cluster_rank": "int32", "tokens": "int32"})

    return run
