"""Sentence language identification inside executors, with py3langid (langid.py's model, shipped inside
the PyPI wheel as data/model.npz.xz: nothing is downloaded, so it runs offline on every executor).

Score = the detector's normalised probability of its best language; flag = that language is one of the
configured ones. The model (~0.5 s to load) is loaded once per Python worker.
"""
from __future__ import annotations

import threading
from typing import Iterator

import pandas as pd

# Bump when the scoring changes: stored scores of an older version are then recomputed.
LANGID_VERSION = 1

_IDENTIFIER = None
_LOCK = threading.Lock()


def identifier():
    global _IDENTIFIER
    with _LOCK:
        if _IDENTIFIER is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            _IDENTIFIER = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        return _IDENTIFIER


def detect(texts: list[str]) -> list[tuple[str, float]]:
    """(ISO 639-1 code, probability) per text."""
    ident = identifier()
    return [(str(lang), float(prob)) for lang, prob in (ident.classify(text) for text in texts)]


def language_mapper(languages: list[str]):
    """mapInPandas body: (sentence_id, text) -> (sentence_id, score = probability, flag = language kept)."""
    wanted = frozenset(languages)

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in batches:
            found = detect(frame["text"].astype(str).tolist())
            yield pd.DataFrame({"sentence_id": frame["sentence_id"].to_numpy(),
                                "score": pd.array([p for _, p in found], dtype="float64"),
                                "flag": pd.array([lang in wanted for lang, _ in found], dtype="boolean")})
    return run
