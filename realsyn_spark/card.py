"""The dataset card the export writes: Markdown + PNGs under <export>/card and the `dataset_card` table.

Figures (each beside the paper's value where the paper gives one, `realsyn-method.md` §5-6):
counts per scale (RealSyn15M/30M/100M = 15,239,498 / 30,328,852 / 100,862,786 images at caps
20/35/180, 168.3M in the band), texts per image (4), CLIP tokens per text (40/38/36 on average), the
image-text cosine histograms of text1 and syn_text (the band [0.51, 0.61]), token-length histograms,
the cluster-size distribution before and after each cap (Fig. 9; 1M clusters, ~168 images each), the
Real-World Data Extraction funnel, and example rows with thumbnails.

Every number is a Spark aggregation (histograms are GROUP BY over bin expressions); only the binned
results come to the driver, where matplotlib (Agg, no pyplot) renders them.
"""
from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from realsyn_spark import funnel, hadoopfs
from realsyn_spark.config import RealSynConfig
from realsyn_spark.scales import Scale, rows_at_cap
from realsyn_spark.sources.fileio import open_output
from realsyn_spark.tables import DATASET_CARD, RUN_LOG, Lake
from udfs.tokens import CONTEXT_LENGTH, TOKENS_SCHEMA, token_counter

# The paper's scales by cap (the cap -> scale mapping is the listing order, see realsyn-method.md §5):
# (name, images, average tokens per text).
PAPER_SCALES = {20: ("RealSyn15M", 15_239_498, 40.0), 35: ("RealSyn30M", 30_328_852, 38.0),
                180: ("RealSyn100M", 100_862_786, 36.0)}
PAPER_BAND_IMAGES = 168.3e6
PAPER_CLUSTERS = 1e6
PAPER_TEXTS_PER_IMAGE = 4.0
PAPER_BAND = (0.51, 0.61)
TEXT_KINDS = ("text1", "text2", "text3", "syn_text")
COSINE_BINS = 50          # over [-1, 1]: 0.04 wide
THUMB_SIDE = 128


@dataclass
class Figure:
    name: str                 # the PNG's stem and the table's `figure`
    title: str
    rows: list = field(default_factory=list)          # (series, key, x, value, paper_value, text)
    note: str = ""
    png: Optional[bytes] = None


def card_scales(cfg: RealSynConfig, chosen: Sequence[Scale]) -> list[tuple[str, Optional[int]]]:
    """(label, cap) of every scale the card describes: the band, each balance cap, each exported scale."""
    out = [("all", None)] + [(f"cap{c}", c) for c in sorted(set(cfg.balance.caps))]
    known = {cap for _, cap in out}
    out += [(s.name, s.cap) for s in chosen if s.cap not in known]
    return out


def _scale_labels(scales: Sequence[tuple[str, Optional[int]]]) -> F.Column:
    """Array column of the labels of the scales a row belongs to (nested scales: several)."""
    return F.filter(F.array(*[F.lit(label) if cap is None else F.when(F.col("cluster_rank") <= cap, F.lit(label))
                              for label, cap in scales]), lambda x: x.isNotNull())


def _paper_name(cap: Optional[int]) -> str:
    return PAPER_SCALES[cap][0] if cap in PAPER_SCALES else ("168.3M band" if cap is None else "")


# ----------------------------------------------------------------------------------- aggregations

def counts_figure(scales, histogram: np.ndarray) -> Figure:
    fig = Figure("counts_per_scale", "Images per scale")
    for label, cap in scales:
        paper = PAPER_BAND_IMAGES if cap is None else (PAPER_SCALES[cap][1] if cap in PAPER_SCALES else None)
        fig.rows.append(("images", label, float(cap or 0), float(rows_at_cap(histogram, cap)), paper,
                         _paper_name(cap) or None))
    fig.note = "Paper: caps 20/35/180 give RealSyn15M/30M/100M; the band holds 168.3M pairs."
    return fig


def texts_figure(dataset: DataFrame, kinds: Sequence[str]) -> Figure:
    present = sum((F.col(k).isNotNull() & (F.length(k) > 0)).cast("int") for k in kinds)
    rows = dataset.groupBy(present.alias("n")).count().orderBy("n").collect()
    fig = Figure("texts_per_image", "Texts per image (text1..3 + syn_text)")
    total = sum(r["count"] for r in rows)
    for r in rows:
        fig.rows.append(("all", f"{r.n} texts", float(r.n), float(r["count"]), None, None))
    mean = sum(r.n * r["count"] for r in rows) / total if total else 0.0
    fig.rows.append(("all", "mean", None, float(mean), PAPER_TEXTS_PER_IMAGE, None))
    fig.note = "Paper: 4 texts per image (3 retrieved realistic + 1 synthetic)."
    return fig


def token_histogram(dataset: DataFrame, scales, kinds: Sequence[str]) -> list:
    """(scale, kind, tokens, texts) rows: exact per-token-count histogram (tokens are 1..77)."""
    rank = F.coalesce(F.col("cluster_rank"), F.lit(2 ** 31 - 1)).alias("cluster_rank")   # unranked: band only
    texts = dataset.select("image_id", rank, *kinds).mapInPandas(token_counter(list(kinds)), TOKENS_SCHEMA)
    rows = (texts.select(F.explode(_scale_labels(scales)).alias("scale"), "kind", "tokens")
            .groupBy("scale", "kind", "tokens").count().collect())
    return [(r.scale, r.kind, int(r.tokens), int(r["count"])) for r in rows]


def token_figures(hist: list, scales, kinds: Sequence[str]) -> tuple[Figure, Figure]:
    means = Figure("tokens_per_text", "Average CLIP tokens per text")
    for label, cap in scales:
        for kind in (*kinds, "all texts"):
            sel = [(t, n) for s, k, t, n in hist if s == label and (k == kind or kind == "all texts")]
            n = sum(c for _, c in sel)
            paper = PAPER_SCALES[cap][2] if (cap in PAPER_SCALES and kind == "all texts") else None
            means.rows.append((label, kind, None, (sum(t * c for t, c in sel) / n) if n else 0.0, paper, None))
    means.note = ("Paper (Table 15): 40 / 38 / 36 average tokens for RealSyn15M / 30M / 100M (tokenizer and "
                  "per-text vs per-image not stated; per text assumed). Here: CLIP BPE (open_clip), start and "
                  f"end tokens included, capped at the context length {CONTEXT_LENGTH}.")
    lengths = Figure("token_length_hist", "Token length per text (scale all)")
    for s, kind, tokens, n in sorted(hist, key=lambda r: (r[1], r[2])):
        if s == "all":
            lengths.rows.append((kind, str(tokens), float(tokens), float(n), None, None))
    lengths.note = ("Paper (Fig. 6, read from the figure): RealSyn token counts peak around 20-35 with a spike at "
                    "the 77-token truncation limit.")
    return means, lengths


def cosine_figure(dataset: DataFrame, band: tuple[float, float]) -> Figure:
    width = 2.0 / COSINE_BINS
    fig = Figure("cosine_hist", "Image-text cosine similarity (scale all)")
    for series, column in (("text1", "score1"), ("syn_text", "similarity")):
        b = F.least(F.greatest(F.floor((F.col(column) + 1.0) / width), F.lit(0)), F.lit(COSINE_BINS - 1))
        rows = dataset.where(F.col(column).isNotNull()).groupBy(b.cast("int").alias("bin")).count().collect()
        for r in sorted(rows, key=lambda r: r.bin):
            x = -1.0 + r.bin * width
            fig.rows.append((series, f"{x:+.2f}", x, float(r["count"]), None, None))
        mean = dataset.agg(F.avg(column)).first()[0]
        fig.rows.append((series, "mean", None, float(mean or 0.0), None, None))
    fig.rows.append(("syn_text", "band_min", band[0], band[0], PAPER_BAND[0], None))
    fig.rows.append(("syn_text", "band_max", band[1], band[1], PAPER_BAND[1], None))
    fig.note = ("text1: the retrieval score (image . sentence); syn_text: the balance similarity. Paper: syn_text "
                f"pairs kept in [{PAPER_BAND[0]}, {PAPER_BAND[1]}] (EVA02-CLIP); Fig. 6 shows the R1/S1 histograms "
                "close to LAION's. Configured band: dashed lines.")
    return fig


def cluster_figure(histogram: np.ndarray, caps: Sequence[int]) -> Figure:
    """Cluster-size distribution before and after each cap, from the (size, clusters) histogram: a cap t
    maps a cluster of size s to min(s, t)."""
    fig = Figure("cluster_sizes", "Cluster sizes before and after balancing (log-log)")
    for series, cap in [("before", None)] + [(f"cap{c}", c) for c in sorted(set(caps))]:
        after: dict[int, int] = {}
        for size, n in histogram.tolist():
            s = size if cap is None else min(size, cap)
            after[s] = after.get(s, 0) + n
        for s in sorted(after):
            fig.rows.append((series, str(s), float(s), float(after[s]), None, None))
    clusters = int(histogram[:, 1].sum()) if len(histogram) else 0
    images = rows_at_cap(histogram, None)
    fig.rows.append(("summary", "clusters", None, float(clusters), PAPER_CLUSTERS, None))
    fig.rows.append(("summary", "mean size", None, images / clusters if clusters else 0.0,
                     PAPER_BAND_IMAGES / PAPER_CLUSTERS, None))
    fig.rows.append(("summary", "max size", None, float(histogram[:, 0].max()) if len(histogram) else 0.0, None, None))
    fig.note = "Paper (§3.3, Fig. 9): 168.3M images in 1M k-means clusters, capped at 20 / 35 / 180 per cluster."
    return fig


def funnel_figure(lake: Lake, run_id: str) -> Figure:
    fig = Figure("funnel", "Real-World Data Extraction funnel")
    rows = funnel.funnel_rows(lake, run_id) if lake.exists(RUN_LOG) else []
    for r in rows:
        if r[3] == "*":
            fig.rows.append((r[0], r[2], float(r[1]), float(r[5]), r[8], r[11]))
    fig.note = "Paper: 336M -> 285M -> 198M images; 2.13B -> 1.82B -> 1.16B -> 0.84B sentences."
    fig.png = _png(funnel.figure(rows))
    return fig


def example_rows(dataset: DataFrame, n: int, seed: int) -> list[dict]:
    """n rows drawn by a seeded hash of the id (stable across runs), with their image bytes."""
    columns = ["image_id", "image_bytes", "raw_image_url", *TEXT_KINDS, "score1", "similarity", "cluster_id",
               "cluster_rank"]
    df = dataset.where(F.col("image_bytes").isNotNull()).select(*columns)
    return [r.asDict() for r in df.orderBy(F.xxhash64("image_id", F.lit(seed)), "image_id").limit(n).collect()]


# -------------------------------------------------------------------------------------- rendering

def _png(fig) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=90, bbox_inches="tight")
    return out.getvalue()


def _axes(ncols: int = 1, width: float = 7.0):
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, 4.0))
    return fig, fig.subplots(1, ncols)


def _series(fig: Figure, series: str) -> list[tuple]:
    return [r for r in fig.rows if r[0] == series and r[2] is not None]


def render(fig: Figure, band: tuple[float, float]) -> bytes:
    if fig.png is not None:
        return fig.png
    plot, ax = _axes(2 if fig.name == "cluster_sizes" else 1, 12.0 if fig.name == "cluster_sizes" else 7.0)
    if fig.name == "counts_per_scale":
        labels = [r[1] for r in fig.rows]
        bars = ax.bar(labels, [r[3] for r in fig.rows], color="#3b7dd8")
        for bar, r in zip(bars, fig.rows):
            paper = f"\npaper {r[4] / 1e6:.1f}M" if r[4] else ""
            ax.annotate(f"{int(r[3])}{paper}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.set_ylabel("images")
    elif fig.name == "texts_per_image":
        rows = _series(fig, "all")
        ax.bar([r[2] for r in rows], [r[3] for r in rows], color="#3b7dd8")
        ax.set_xlabel("texts per image (paper: 4)")
        ax.set_ylabel("images")
    elif fig.name == "tokens_per_text":
        scales = list(dict.fromkeys(r[0] for r in fig.rows))
        kinds = list(dict.fromkeys(r[1] for r in fig.rows))
        width = 0.8 / max(1, len(kinds))
        for i, kind in enumerate(kinds):
            values = [next(r[3] for r in fig.rows if r[0] == s and r[1] == kind) for s in scales]
            ax.bar([j + i * width for j in range(len(scales))], values, width=width, label=kind)
        papers = [(j, r[4]) for j, s in enumerate(scales) for r in fig.rows if r[0] == s and r[4] is not None]
        if papers:
            ax.scatter([j + 0.4 for j, _ in papers], [p for _, p in papers], marker="*", s=120, color="k",
                       label="paper (all texts)", zorder=3)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(scales))], scales)
        ax.set_ylabel("CLIP tokens per text")
        ax.legend(fontsize=8)
    elif fig.name in ("token_length_hist", "cosine_hist"):
        for series in dict.fromkeys(r[0] for r in fig.rows):
            rows = [r for r in _series(fig, series) if not r[1].startswith("band")]
            if rows:
                ax.step([r[2] for r in rows], [r[3] for r in rows], where="post", label=series)
        if fig.name == "cosine_hist":
            for x in band:
                ax.axvline(x, ls="--", color="#c63", lw=1)
            ax.set_xlabel("cosine(image, text)")
        else:
            ax.axvline(CONTEXT_LENGTH, ls=":", color="#888", lw=1)
            ax.set_xlabel("CLIP tokens")
        ax.set_ylabel("texts" if fig.name == "token_length_hist" else "images")
        ax.legend(fontsize=8)
    elif fig.name == "cluster_sizes":
        for series in dict.fromkeys(r[0] for r in fig.rows if r[0] != "summary"):
            rows = _series(fig, series)
            sizes = np.asarray([r[2] for r in rows])
            counts = np.asarray([r[3] for r in rows])
            order = np.argsort(-sizes)       # rank-size curve from the histogram: ranks 1.. in size order
            ranks = np.cumsum(counts[order])
            ax[0].step(ranks, sizes[order], where="pre", label=series)
            ax[1].plot(sizes, counts, marker=".", label=series)
        for a, (xl, yl) in zip(ax, (("cluster rank (largest first)", "images in cluster"),
                                    ("cluster size", "clusters of that size"))):
            a.set_xscale("log")
            a.set_yscale("log")
            a.set_xlabel(xl)
            a.set_ylabel(yl)
            a.legend(fontsize=8)
    (ax[0] if isinstance(ax, np.ndarray) else ax).set_title(fig.title)
    return _png(plot)


def thumbnail(data: bytes) -> Optional[bytes]:
    from udfs.pixels import decode_rgb

    try:
        image = decode_rgb(bytes(data))
    except Exception:  # noqa: BLE001 - an undecodable example gets no thumbnail, the card still renders
        return None
    image.thumbnail((THUMB_SIDE, THUMB_SIDE))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{float(value):.4g}"
    return str(value)


def _cell(text) -> str:
    return "" if text is None else str(text).replace("|", "\\|").replace("\n", " ")


def markdown(figures: Sequence[Figure], examples: list[dict], header: str) -> str:
    lines = [header, ""]
    for fig in figures:
        lines += [f"## {fig.title}", "", f"![{fig.title}]({fig.name}.png)", "", fig.note, ""]
        summary = [r for r in fig.rows if r[2] is None or r[4] is not None or fig.name in ("counts_per_scale",)]
        if fig.name in ("funnel",):
            summary = fig.rows
        if summary:
            lines += ["| series | value | this run | paper |", "|---|---|---|---|"]
            lines += [f"| {_cell(r[0])} | {_cell(r[1])} | {_fmt(r[3])} | {_fmt(r[4])} |" for r in summary]
            lines.append("")
    lines += ["## Example rows", "", "| image | text1 (score) | text2 | text3 | syn_text (similarity) | cluster, rank |",
              "|---|---|---|---|---|---|"]
    for r in examples:
        image = f"![{r['image_id']}](examples/{r['image_id']}.jpg)" if r.get("thumbnail") else "(no image)"
        lines.append(f"| {image} | {_cell(r.get('text1'))} ({_fmt(r.get('score1'))}) | {_cell(r.get('text2'))} | "
                     f"{_cell(r.get('text3'))} | {_cell(r.get('syn_text'))} ({_fmt(r.get('similarity'))}) | "
                     f"{r.get('cluster_id')}, {r.get('cluster_rank')} |")
    return "\n".join(lines) + "\n"


def _num(value) -> Optional[float]:
    return None if value is None else float(value)


def _write(path: str, data: bytes) -> None:
    with open_output(path) as out:
        out.write(data)


def write_card(lake: Lake, cfg: RealSynConfig, run_id: str, dataset: DataFrame, histogram: np.ndarray,
               chosen: Sequence[Scale], folder: str) -> int:
    """Compute every figure, write README.md + PNGs + example thumbnails under `folder` (replaced whole)
    and the `dataset_card` table; returns the number of figures."""
    scales = card_scales(cfg, chosen)
    kinds = [k for k in TEXT_KINDS if k in dataset.columns]
    light = dataset.drop("image_bytes")
    band = (cfg.balance.similarity_min, cfg.balance.similarity_max)
    tokens, lengths = token_figures(token_histogram(light, scales, kinds), scales, kinds)
    figures = [counts_figure(scales, histogram), texts_figure(light, kinds), tokens, lengths,
               cosine_figure(light, band), cluster_figure(histogram, cfg.balance.caps), funnel_figure(lake, run_id)]
    examples = example_rows(dataset, cfg.export.card_examples, cfg.balance.seed)
    hadoopfs.delete(lake.spark, folder)
    for fig in figures:
        _write(f"{folder}/{fig.name}.png", render(fig, band))
    for r in examples:
        r["thumbnail"] = thumbnail(r["image_bytes"])
        if r["thumbnail"]:
            _write(f"{folder}/examples/{r['image_id']}.jpg", r["thumbnail"])
    table = [(f.name, series, key, _num(x), _num(value), _num(paper), f"{f.name}.png", text, run_id)
             for f in figures for series, key, x, value, paper, text in f.rows]
    table += [("examples", r["image_id"], "example", float(r["cluster_rank"] or 0),
               float(r["similarity"]) if r.get("similarity") is not None else None, None,
               f"examples/{r['image_id']}.jpg" if r["thumbnail"] else None, r.get("text1"), run_id) for r in examples]
    lake.overwrite(DATASET_CARD, lake.spark.createDataFrame(table, DATASET_CARD.schema))
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = (f"# Dataset card\n\nRealSyn-style dataset (arXiv 2502.12513) built by realsyn-spark, run `{run_id}`, "
              f"{now}. Scales: " + ", ".join(f"{label} (cap {cap})" if cap else label for label, cap in scales)
              + ". Figures as rows: the `dataset_card` table.")
    _write(f"{folder}/README.md", markdown(figures, examples, header).encode("utf-8"))
    return len(figures)
