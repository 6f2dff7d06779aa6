"""Filter rules are declared once (realsyn_spark/rules.py) and everything else names them from there
(issue 9, item 4): the funnel's steps, the extract stage's rule lists, the dedup stage."""
from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from realsyn_spark import funnel
from realsyn_spark.config import load_config
from realsyn_spark.pipeline import SPECS
from realsyn_spark.rules import RULES, UndeclaredRuleError, rules_of
from realsyn_spark.stages import extract


def test_each_rule_is_declared_once_with_one_deciding_stage_that_writes_its_table():
    keys = [(r.modality, r.name) for r in RULES]
    assert len(keys) == len(set(keys))
    for r in RULES:
        assert r.modality in {t.name for t in SPECS[r.decided_by].writes}, r


def test_the_funnel_reads_the_declarations():
    for modality, (_, steps) in funnel.FUNNEL_STEPS.items():
        assert [name for s in steps for name in s.rules] == list(rules_of(modality))
        for step in steps:
            assert step.rules == rules_of(modality, step.name)


def test_extract_rules_are_declared_and_in_declared_order(spark):   # Column objects need a session
    cfg = load_config()
    declared = rules_of("images", decided_by="extract")
    names = [n for n, _ in extract.image_rules(cfg.image_filter)]
    assert names == [n for n in declared if n in names]
    declared = rules_of("sentences", decided_by="extract")
    names = [n for n, _ in extract.sentence_rules(cfg.sentence_filter)]
    assert names == [n for n in declared if n in names]


def test_an_undeclared_rule_name_is_refused(spark):
    with pytest.raises(UndeclaredRuleError, match="'blurry' is not declared for images"):
        extract._first_failing([("blurry", F.lit(True))], "images")
