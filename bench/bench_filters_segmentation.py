"""Boundary precision / recall of the offline sentence segmenter (realsyn_spark.text.split_sentences).

    python bench/bench_filters_segmentation.py

Two hand-labelled sets (tests/segmentation_gold.py): GOLD (48 paragraphs, written first and used while
the rules were last changed) and HELDOUT (40 paragraphs written afterwards and never used to tune,
plus 19 written for issue 10: a.m./p.m. before capitalised words, German ordinals, footnote markers,
Chinese).
A boundary is a sentence end inside a paragraph; precision = correct predicted boundaries / predicted,
recall = correct / gold. A naive split on every ". ", "! ", "? " is the baseline.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realsyn_spark.text import split_sentences
from tests.segmentation_gold import GOLD, HELDOUT, errors, score


def naive(paragraph: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", paragraph) if s]


def main() -> None:
    print(f"{'segmenter':<12} {'set':<8} {'paras':>5} {'bounds':>6} {'precision':>9} {'recall':>7} {'F1':>6} {'exact':>6}")
    for name, fn in (("naive", naive), ("realsyn", split_sentences)):
        for label, gold in (("GOLD", GOLD), ("HELDOUT", HELDOUT)):
            s = score(fn, gold)
            print(f"{name:<12} {label:<8} {s['paragraphs']:>5} {s['boundaries']:>6} {s['precision']:>9.3f} "
                  f"{s['recall']:>7.3f} {s['f1']:>6.3f} {s['exact_paragraphs']:>6.3f}")
    print("\nrealsyn errors on HELDOUT:")
    for gold, predicted in errors(split_sentences, HELDOUT):
        print(f"  gold {gold}\n  got  {predicted}")


if __name__ == "__main__":
    main()
