"""Every filter rule, declared once: its `drop_reason` name, the modality (table) it drops rows of, the
funnel step it belongs to, and the stage whose computation decides it. The extract stage's rule lists,
the dedup stage and the funnel report all name rules through these declarations (an undeclared name is
an error), so a new rule is added here and nowhere else is a string repeated.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    name: str          # the drop_reason value
    modality: str      # "images" | "sentences"
    step: str          # funnel step (funnel.STEP_ORDER)
    decided_by: str    # stage that computes it


RULES: tuple[Rule, ...] = (
    # images: not fetched / not decodable (before the paper's count), quality, redundancy
    Rule("not_fetched", "images", "unavailable", "extract"),
    Rule("unavailable", "images", "unavailable", "extract"),
    Rule("min_side", "images", "quality", "extract"),
    Rule("aspect_ratio", "images", "quality", "extract"),
    Rule("exact_duplicate", "images", "redundancy", "extract"),
    Rule("near_duplicate", "images", "redundancy", "extract"),
    Rule("semantic_duplicate", "images", "redundancy", "dedup"),
    # sentences: language (OBELICS was English-filtered before the paper counted), quality, semantic, redundancy
    Rule("language", "sentences", "language", "extract"),
    Rule("emoji", "sentences", "quality", "extract"),
    Rule("url", "sentences", "quality", "extract"),
    Rule("min_words", "sentences", "quality", "extract"),
    Rule("max_words", "sentences", "quality", "extract"),
    Rule("cat", "sentences", "quality", "extract"),
    Rule("entropy", "sentences", "semantic", "extract"),
    Rule("perplexity", "sentences", "semantic", "extract"),
    Rule("exact_duplicate", "sentences", "redundancy", "extract"),
    Rule("semantic_duplicate", "sentences", "redundancy", "dedup"),
)

MODALITY_OF_KIND = {"image": "images", "sentence": "sentences"}


class UndeclaredRuleError(KeyError):
    pass


def rule(modality: str, name: str) -> str:
    """The declared drop_reason `name` of `modality` (raises for a name not declared in RULES)."""
    modality = MODALITY_OF_KIND.get(modality, modality)
    if not any(r.modality == modality and r.name == name for r in RULES):
        raise UndeclaredRuleError(f"rule {name!r} is not declared for {modality} in realsyn_spark/rules.py")
    return name


def rules_of(modality: str, step: str | None = None, decided_by: str | None = None) -> tuple[str, ...]:
    """Declared rule names of a modality, in declaration order (the order the rules apply in)."""
    return tuple(r.name for r in RULES if r.modality == modality and (step is None or r.step == step)
                 and (decided_by is None or r.decided_by == decided_by))
