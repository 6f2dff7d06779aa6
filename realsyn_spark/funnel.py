"""The Real-World Data Extraction funnel: rows per step and per rule beside the paper's figure.

Paper (arXiv 2502.12513 §3.1, Figure "data_filter"): images 336M -> 285M (quality) -> 198M (redundancy);
sentences 2.13B -> 1.82B (quality) -> 1.16B (semantic) -> 0.84B (redundancy).

The counts come from the `drop_reason` of every row of `images` and `sentences` (the current state of
the lake, so the report always adds up to the tables). Images that were never fetched or do not decode
are shown before the first step: the paper's 336M are the images it had.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from realsyn_spark.rules import RULES, rules_of
from realsyn_spark.tables import FUNNEL, IMAGES, RUN_LOG, SENTENCES, Lake

log = logging.getLogger("realsyn")


@dataclass(frozen=True)
class Step:
    name: str
    rules: tuple[str, ...]
    paper_remaining: float | None


# Per modality: its table and the steps in order with the paper's remaining count after each (None: before
# the paper's starting count). Which rule belongs to which step is declared in realsyn_spark/rules.py.
STEP_ORDER = {
    "images": (IMAGES, [("unavailable", None), ("extracted", 336e6), ("quality", 285e6), ("redundancy", 198e6)]),
    # OBELICS, the paper's source, was English-filtered before its 2.13e9 sentences were counted.
    "sentences": (SENTENCES, [("language", None), ("extracted", 2.13e9), ("quality", 1.82e9), ("semantic", 1.16e9),
                              ("redundancy", 0.84e9)]),
}
FUNNEL_STEPS = {modality: (spec, [Step(name, rules_of(modality, name), paper) for name, paper in steps])
                for modality, (spec, steps) in STEP_ORDER.items()}
assert {(r.modality, r.step) for r in RULES} <= {(m, s) for m, (_, steps) in STEP_ORDER.items() for s, _ in steps}


def _reason_counts(df: DataFrame) -> dict[str | None, int]:
    return {r.drop_reason: int(r["count"]) for r in df.groupBy("drop_reason").count().collect()}


def _notes(lake: Lake, run_id: str | None) -> dict[str, str]:
    """Rules that were skipped in the latest runs of the stages that decide them, from the run log counters."""
    deciders = sorted({r.decided_by for r in RULES})
    log_rows = lake.read_or_empty(RUN_LOG).where(F.col("stage").isin(*deciders) & (F.col("status") == "ok"))
    if run_id is not None and log_rows.where(F.col("run_id") == run_id).limit(1).count():
        log_rows = log_rows.where(F.col("run_id") == run_id)
    latest = {}
    for r in log_rows.orderBy("started_at").collect():
        latest[r.stage] = r.counters or {}
    notes = {}
    extract, dedup_ = latest.get("extract", {}), latest.get("dedup", {})
    if extract.get("perplexity_skipped"):
        notes["perplexity"] = "SKIPPED: perplexity model unavailable (sentence_filter.perplexity_on_missing_model=skip)"
    for kind, modality in (("image", "images"), ("sentence", "sentences")):
        if dedup_.get(f"{kind}_skipped_random_weights"):
            notes[f"{modality}:semantic_duplicate"] = "SKIPPED: CLIP vectors from random weights (dedup.on_random_weights=skip)"
        if dedup_.get(f"{kind}_disabled"):
            notes[f"{modality}:semantic_duplicate"] = "disabled by configuration"
    return notes


def _note(notes: dict[str, str], modality: str, rule: str) -> str | None:
    return notes.get(rule) or notes.get(f"{modality}:{rule}")


def funnel_rows(lake: Lake, run_id: str) -> list[tuple]:
    """Rows of the FUNNEL table: per step a total row (rule '*') and one row per rule."""
    notes = _notes(lake, run_id)
    rows = []
    for modality, (spec, steps) in FUNNEL_STEPS.items():
        counts = _reason_counts(lake.read(spec))
        remaining = sum(counts.values())
        start = previous = None
        paper_start = paper_previous = None
        known = {r for s in steps for r in s.rules} | {None}
        other = sum(n for reason, n in counts.items() if reason not in known)
        for index, step in enumerate(steps):
            removed_by_rule = {rule: counts.get(rule, 0) for rule in step.rules}
            if step.name == "redundancy" and other:
                removed_by_rule["other"] = other   # reasons this report does not know (future rules)
            removed = sum(removed_by_rule.values())
            remaining -= removed
            if step.paper_remaining is not None and start is None:
                start, paper_start = remaining, step.paper_remaining
            ratio = (remaining / start) if start else None
            ratio_prev = (remaining / previous) if previous else None
            paper_ratio = (step.paper_remaining / paper_start) if (paper_start and step.paper_remaining) else None
            paper_prev = (step.paper_remaining / paper_previous) if (paper_previous and step.paper_remaining) else None
            step_note = "; ".join(f"{rule} {_note(notes, modality, rule)}" for rule in step.rules
                                  if _note(notes, modality, rule)) or None
            rows.append((modality, index, step.name, "*", removed, remaining, ratio, ratio_prev,
                         step.paper_remaining, paper_ratio, paper_prev, step_note, run_id))
            for rule, n in removed_by_rule.items():
                note = _note(notes, modality, rule)
                rows.append((modality, index, step.name, rule, n, remaining, None, None, None, None, None, note, run_id))
            if step.paper_remaining is not None:
                previous, paper_previous = remaining, step.paper_remaining
    return rows


def _fmt_count(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, scale in (("B", 1e9), ("M", 1e6)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{int(value)}"


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render_table(rows: list[tuple]) -> str:
    header = (f"{'modality':<10} {'step':<12} {'rule':<20} {'removed':>8} {'remaining':>10} "
              f"{'ratio':>6} {'step':>6} | {'paper':>7} {'ratio':>6} {'step':>6}  note")
    lines = ["Real-World Data Extraction funnel (ratio = remaining / first step; step = remaining / previous step)",
             header, "-" * len(header)]
    for (modality, _, step, rule, removed, remaining, ratio, ratio_prev, paper, paper_ratio, paper_prev, note,
         _run) in rows:
        if rule == "*":
            lines.append(f"{modality:<10} {step:<12} {'(all rules)':<20} {removed:>8} {remaining:>10} "
                         f"{_fmt_ratio(ratio):>6} {_fmt_ratio(ratio_prev):>6} | {_fmt_count(paper):>7} "
                         f"{_fmt_ratio(paper_ratio):>6} {_fmt_ratio(paper_prev):>6}  {note or ''}")
        else:
            lines.append(f"{'':<10} {'':<12} {'- ' + rule:<20} {removed:>8} {'':>10} {'':>6} {'':>6} | "
                         f"{'':>7} {'':>6} {'':>6}  {note or ''}")
    return "\n".join(lines)


def render_png(rows: list[tuple], path: str | Path) -> Path | None:
    """Write `figure(rows)` as a PNG (None when matplotlib is not installed)."""
    try:
        fig = figure(rows)
    except ImportError:
        log.warning("matplotlib is not installed: funnel PNG not written")
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def figure(rows: list[tuple]):
    """Two panels (images, sentences): remaining fraction per step, ours beside the paper's, counts above.

    A `matplotlib.figure.Figure` made without pyplot (no global state, no backend switch), so the stage
    writes it headless and a notebook displays the same figure inline."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.8))
    axes = fig.subplots(1, 2)
    for ax, modality in zip(axes, FUNNEL_STEPS):
        steps = [r for r in rows if r[0] == modality and r[3] == "*" and r[8] is not None]
        names = [r[2] for r in steps]
        ours = [r[6] or 0.0 for r in steps]
        paper = [r[9] or 0.0 for r in steps]
        x = range(len(names))
        bars = ax.bar([i - 0.2 for i in x], ours, width=0.4, label="this run", color="#3b7dd8")
        ax.bar([i + 0.2 for i in x], paper, width=0.4, label="RealSyn paper", color="#bbbbbb")
        for bar, r in zip(bars, steps):
            ax.annotate(f"{r[5]}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                        va="bottom", fontsize=8)
        for i, r in enumerate(steps):
            ax.annotate(_fmt_count(r[8]), (i + 0.2, paper[i]), ha="center", va="bottom", fontsize=8, color="#555555")
        ax.set_xticks(list(x), names)
        ax.set_ylim(0, 1.15)
        ax.set_ylabel("fraction of the first step")
        ax.set_title(f"{modality}: rows remaining per step")
        ax.legend(loc="upper right", fontsize=8)
        notes = sorted({f"{r[3]}: {r[11]}" for r in rows if r[0] == modality and r[3] != "*" and r[11]})
        if notes:
            ax.text(0.0, -0.22, "\n".join(notes), transform=ax.transAxes, fontsize=7, va="top", color="#a33")
    fig.suptitle("Real-World Data Extraction funnel vs RealSyn (336M->285M->198M images; "
                 "2.13B->1.82B->1.16B->0.84B sentences)", fontsize=10)
    fig.tight_layout()
    return fig


def default_output_dir(lake: Lake, configured: str | None) -> str | None:
    if configured:
        return configured
    root = lake.cfg.root
    if "://" in root and not root.startswith("file:"):
        return None      # remote lake: no local report folder; set funnel.output_dir
    return os.path.join(root.removeprefix("file:"), "reports")


def build(lake: Lake, run_id: str, png: bool = True, output_dir: str | None = None) -> tuple[list[tuple], Path | None]:
    rows = funnel_rows(lake, run_id)
    lake.overwrite(FUNNEL, lake.spark.createDataFrame(rows, FUNNEL.schema))
    image = None
    out = default_output_dir(lake, output_dir)
    if png and out:
        image = render_png(rows, os.path.join(out, "funnel.png"))
    return rows, image


def stored_rows(lake: Lake) -> list[tuple]:
    if not lake.exists(FUNNEL):
        return []
    frame = lake.read(FUNNEL).orderBy("modality", "step_index", F.col("rule") != "*", "rule").collect()
    order = {m: i for i, m in enumerate(FUNNEL_STEPS)}
    rows = [tuple(r) for r in frame]
    return sorted(rows, key=lambda r: (order.get(r[0], 9), r[1], r[3] != "*"))
