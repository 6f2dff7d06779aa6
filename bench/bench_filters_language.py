"""Throughput of the language-ID rule (udfs.langid, py3langid) on one core, against segmentation of the
same text as the baseline measured in the same run.

    python bench/bench_filters_language.py [--repeat 20]

Sentences: the hand-labelled gold sets (tests/segmentation_gold.py), English plus the German and Chinese
held-out paragraphs, repeated. Also prints how many English gold sentences the default rule would drop
(detected as another language with probability >= sentence_filter.language_min_confidence).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realsyn_spark.config import SentenceFilterConfig
from realsyn_spark.text import split_sentences
from tests.segmentation_gold import GOLD, HELDOUT
from udfs.langid import detect, identifier


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    sentences = [s for paragraph in GOLD + HELDOUT for s in paragraph] * args.repeat
    t = time.perf_counter()
    identifier()
    load = time.perf_counter() - t
    t = time.perf_counter()
    for s in sentences:
        split_sentences(s)
    seg = time.perf_counter() - t
    t = time.perf_counter()
    detect(sentences)
    lid = time.perf_counter() - t
    print(f"model load {load:.2f} s; {len(sentences)} sentences")
    print(f"segmentation (baseline) {len(sentences) / seg:,.0f} sentences/s")
    print(f"language ID             {len(sentences) / lid:,.0f} sentences/s ({lid / seg:.1f}x segmentation time)")
    cfg = SentenceFilterConfig()
    english = [s for paragraph in GOLD for s in paragraph]
    dropped = [(s, lang, p) for s, (lang, p) in zip(english, detect(english))
               if lang not in cfg.languages and p >= cfg.language_min_confidence]
    print(f"English GOLD sentences the default rule drops: {len(dropped)} of {len(english)}")
    for s, lang, p in dropped:
        print(f"  {lang} {p:.2f} {s}")


if __name__ == "__main__":
    main()
