"""The segmenter against the hand-labelled paragraph sets (bench/bench_filters_segmentation.py prints the
figures). Floors guard against regressions; they are not the measured values."""
from __future__ import annotations

from realsyn_spark.text import split_sentences
from tests.segmentation_gold import GOLD, HELDOUT, score


def test_gold_sets_are_large_enough_and_well_formed():
    assert len(GOLD) >= 40 and len(HELDOUT) >= 40
    for paragraph in GOLD + HELDOUT:
        assert paragraph and all(s == s.strip() and s for s in paragraph)


def test_boundary_precision_and_recall():
    dev = score(split_sentences, GOLD)
    held = score(split_sentences, HELDOUT)
    assert dev["precision"] >= 0.95 and dev["recall"] >= 0.95, dev
    assert held["precision"] >= 0.9 and held["recall"] >= 0.9, held


def test_abbreviation_that_ends_a_sentence():
    assert split_sentences("He moved to the U.S. The move changed his life.") == [
        "He moved to the U.S.", "The move changed his life."]
    assert split_sentences("The U.S. team won.") == ["The U.S. team won."]
    assert split_sentences("iPhone sales rose. eBay shares fell.") == ["iPhone sales rose.", "eBay shares fell."]
