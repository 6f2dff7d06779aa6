"""Rendering helpers for the notebooks: HTML strings and matplotlib figures, no Spark.

Everything here takes plain Python values (rows as dicts, numpy arrays), so it is unit-tested without a
session and the notebooks stay a few lines per cell. Figures are `matplotlib.figure.Figure` objects made
without pyplot: nothing accumulates in pyplot's global state; a notebook shows one with
`display(viz.png_image(fig))`. HTML goes through `IPython.display.HTML` (or `displayHTML`).
"""
from __future__ import annotations

import base64
import html
import io
from typing import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

THUMB_SIDE = 160


# ------------------------------------------------------------------------------------------ images

def decode_image(data: bytes | None) -> Image.Image | None:
    """Stored image bytes -> the upright 8-bit RGB image the pipeline itself sees, or None when they do
    not decode: the one decode helper of pHash, embedding and export (`udfs.pixels.decode_rgb`: EXIF
    orientation applied, 16-bit and float modes scaled, transparency composited on white)."""
    from udfs.pixels import decode_rgb

    if not data:
        return None
    try:
        return decode_rgb(bytes(data))
    except Exception:  # noqa: BLE001 - any undecodable payload is shown as a placeholder, not a crash
        return None


def thumbnail_data_uri(data: bytes | None, side: int = THUMB_SIDE) -> str | None:
    """A `data:` URI of a JPEG thumbnail (longest side <= `side`); None if undecodable."""
    img = decode_image(data)
    if img is None:
        return None
    img.thumbnail((side, side))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=85)
    return f"data:image/jpeg;base64,{base64.b64encode(out.getvalue()).decode('ascii')}"


def _esc(value) -> str:
    return html.escape("" if value is None else str(value))


def _fmt_score(value) -> str:
    return "-" if value is None else f"{float(value):.3f}"


def _thumb_html(data, side: int, alt: str = "") -> str:
    uri = thumbnail_data_uri(data, side)
    if uri is None:
        return (f'<div class="rs-noimg" style="width:{side}px;height:{side // 2}px;background:#eee;'
                f'color:#888;font-size:11px;display:flex;align-items:center;justify-content:center">'
                f'no decodable image</div>')
    return f'<img src="{uri}" alt="{_esc(alt)}" style="max-width:{side}px;max-height:{side}px"/>'


GRID_STYLE = ("display:grid;grid-template-columns:repeat(auto-fill,minmax({w}px,1fr));gap:10px;"
              "font-family:sans-serif;font-size:12px")
CARD_STYLE = "border:1px solid #ddd;border-radius:6px;padding:6px;background:#fff;color:#222"


def _grid(cards: Iterable[str], card_width: int, title: str | None = None) -> str:
    cards = list(cards)
    head = f"<h4 style='font-family:sans-serif'>{_esc(title)}</h4>" if title else ""
    if not cards:
        return head + "<p style='font-family:sans-serif;color:#888'>(no rows)</p>"
    body = "".join(f'<div class="rs-card" style="{CARD_STYLE}">{c}</div>' for c in cards)
    return f'{head}<div class="rs-grid" style="{GRID_STYLE.format(w=card_width)}">{body}</div>'


def image_grid_html(items: Sequence[Mapping], caption_keys: Sequence[str] = (), side: int = THUMB_SIDE,
                    title: str | None = None, bytes_key: str = "image_bytes") -> str:
    """A grid of thumbnails with `key: value` lines under each (rows without bytes get a placeholder)."""
    cards = []
    for item in items:
        lines = "".join(f"<div><b>{_esc(k)}</b>: {_esc(item.get(k))}</div>" for k in caption_keys)
        cards.append(_thumb_html(item.get(bytes_key), side, str(item.get("image_id", ""))) + lines)
    return _grid(cards, side + 20, title)


def dataset_card_html(row: Mapping, side: int = 200) -> str:
    """One dataset row: the image, text1..3 with scores, syn_text with its similarity, cluster, scales."""
    texts = "".join(
        f"<li><span style='color:#36c'>[{_fmt_score(row.get(f'score{i}'))}]</span> {_esc(row.get(f'text{i}'))}</li>"
        for i in (1, 2, 3) if row.get(f"text{i}") is not None)
    scales = row.get("scales")
    scales = ", ".join(str(s) for s in scales) if scales else "none"
    return (_thumb_html(row.get("image_bytes"), side, str(row.get("image_id", "")))
            + f"<ol style='padding-left:18px;margin:4px 0'>{texts}</ol>"
            + f"<div><b>syn</b> <span style='color:#c63'>[{_fmt_score(row.get('similarity'))}]</span> "
              f"{_esc(row.get('syn_text'))}</div>"
            + f"<div style='color:#666;margin-top:4px'>cluster {_esc(row.get('cluster_id'))} · rank "
              f"{_esc(row.get('cluster_rank'))} · scales {_esc(scales)}</div>"
            + f"<div style='color:#999;font-size:10px;word-break:break-all'>{_esc(row.get('raw_image_url'))}</div>")


def dataset_browser_html(rows: Sequence[Mapping], side: int = 200, title: str | None = None) -> str:
    """The dataset browser grid: one card per row (see `dataset_card_html`)."""
    return _grid((dataset_card_html(r, side) for r in rows), side + 120, title)


def text_examples_html(groups: Mapping[str, Sequence[str]], title: str | None = None) -> str:
    """Sampled sentences per group (e.g. per drop rule), as a list under each group's name."""
    head = f"<h4 style='font-family:sans-serif'>{_esc(title)}</h4>" if title else ""
    parts = []
    for name, texts in groups.items():
        items = "".join(f"<li>{_esc(t)}</li>" for t in texts) or "<li><i>(none)</i></li>"
        parts.append(f"<div style='font-family:sans-serif;font-size:12px'><b>{_esc(name)}</b>"
                     f"<ul style='margin:2px 0 8px 0'>{items}</ul></div>")
    return head + "".join(parts)


def table_html(rows: Sequence[Mapping], columns: Sequence[str], title: str | None = None) -> str:
    """A plain HTML table of `columns` (escaped values), for quarantine examples and retrieval lists."""
    head = f"<h4 style='font-family:sans-serif'>{_esc(title)}</h4>" if title else ""
    header = "".join(f"<th style='text-align:left;padding:2px 8px'>{_esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td style='padding:2px 8px;vertical-align:top'>{_esc(r.get(c))}</td>"
                                    for c in columns) + "</tr>" for r in rows)
    return (f"{head}<table style='font-family:sans-serif;font-size:12px;border-collapse:collapse'>"
            f"<tr>{header}</tr>{body}</table>")


# ----------------------------------------------------------------------------------------- figures

def _figure(width: float = 7.0, height: float = 4.0, ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    axes = fig.subplots(1, ncols)
    return fig, axes


def figure_png(fig) -> bytes:
    """PNG bytes of a figure (for tests and for writing a report file)."""
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=90, bbox_inches="tight")
    return out.getvalue()


def png_image(fig):
    """The figure as an IPython PNG image: `display(viz.png_image(fig))` renders inline in Jupyter and on
    Databricks alike (a pyplot-free Figure has no rich display of its own)."""
    from IPython.display import Image

    return Image(data=figure_png(fig), format="png")


def size_rank_figure(series: Mapping[str, Sequence[int]], title: str = "cluster sizes"):
    """Log-log rank/size plot: one line per named series of cluster sizes (sorted largest first)."""
    fig, ax = _figure()
    for name, sizes in series.items():
        sizes = np.sort(np.asarray([s for s in sizes if s and s > 0], dtype=float))[::-1]
        if len(sizes):
            ax.plot(np.arange(1, len(sizes) + 1), sizes, marker=".", label=f"{name} ({int(sizes.sum())} images)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("cluster rank (largest first)")
    ax.set_ylabel("images in cluster")
    ax.set_title(title)
    if series:
        ax.legend(fontsize=8)
    return fig


def size_histogram_figure(sizes: Sequence[int], title: str = "cluster size distribution", xlabel: str = "cluster size"):
    """Histogram of cluster sizes on log-spaced bins, log counts (how many clusters have each size)."""
    fig, ax = _figure()
    sizes = np.asarray([s for s in sizes if s and s > 0], dtype=float)
    if len(sizes):
        bins = np.unique(np.geomspace(1, max(2.0, sizes.max() + 1), num=20).round())
        ax.hist(sizes, bins=bins, color="#3b7dd8")
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("clusters")
    ax.set_title(f"{title} ({len(sizes)} clusters)")
    return fig


def bar_figure(counts: Mapping[str, int], title: str, ylabel: str = "images"):
    """Bars with their values on top (images per scale, quarantine kinds, ...)."""
    fig, ax = _figure()
    names, values = [str(k) for k in counts], [int(v) for v in counts.values()]
    bars = ax.bar(names, values, color="#3b7dd8")
    for bar, value in zip(bars, values):
        ax.annotate(str(value), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                    fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=30 if len(names) > 4 else 0)
    return fig


def project_2d(vectors: np.ndarray, method: str = "pca", seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D projection of row vectors: UMAP when asked for and installed, else PCA (numpy SVD).

    Returns (points, method actually used), so a notebook can say when UMAP was not available."""
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        return np.zeros((0, 2)), "none"
    if method == "umap" and len(x) > 3:
        try:
            import umap  # optional, only if installed offline

            return umap.UMAP(n_components=2, random_state=seed).fit_transform(x), "umap"
        except ImportError:
            pass
    centred = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    components = vt[:2]
    points = centred @ components.T
    if points.shape[1] < 2:
        points = np.pad(points, ((0, 0), (0, 2 - points.shape[1])))
    return points, "pca"


def projection_figure(points: np.ndarray, clusters: Sequence[int], kinds: Sequence[str],
                      title: str = "embeddings (2-D)"):
    """Scatter of 2-D points coloured by cluster, marker by kind ('image' = circle, 'sentence' = cross)."""
    fig, ax = _figure(7.0, 5.5)
    points = np.asarray(points)
    clusters = np.asarray(clusters)
    kinds = np.asarray(kinds)
    markers = {"image": "o", "sentence": "x"}
    uniq = sorted(set(clusters.tolist()))
    colour = {c: i for i, c in enumerate(uniq)}
    for kind in sorted(set(kinds.tolist())):
        mask = kinds == kind
        if mask.any():
            ax.scatter(points[mask, 0], points[mask, 1], c=[colour[c] for c in clusters[mask]], cmap="tab20",
                       vmin=0, vmax=max(1, len(uniq) - 1), marker=markers.get(kind, "."), s=22, alpha=0.75,
                       label=f"{kind} ({int(mask.sum())})")
    ax.set_title(f"{title}: {len(uniq)} clusters")
    if len(points):
        ax.legend(fontsize=8)
    return fig
