"""The notebooks run top to bottom on a pipeline-built lake (nbclient, a real kernel with its own local
Spark), a failing cell fails the test; the dataset browser emits one <img> per requested row; the
notebooks are stored without outputs."""
from __future__ import annotations

import os
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
NAMES = [p.stem for p in NOTEBOOKS]
# Each notebook's extra parameter values for the test run (appended after its parameters cell, as a
# user would edit it). Small caps so that the tiny demo clusters are actually cut.
EXTRA = {"browse_dataset": "N = 5\nSEED = 3", "balance": "CAPS = [2, 4]\nTOP_CLUSTERS = 2",
         "retrieval": "SAMPLE = 60\nPROJECTION = 'umap'"}


def _read(path: Path):
    import nbformat

    return nbformat.read(path, as_version=4)


def kernel_env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}


def start_kernel():
    """A kernel on this interpreter (jupyter_client runs the `python3` spec with sys.executable), the
    repository on PYTHONPATH, cwd notebooks/ as Jupyter would use."""
    from jupyter_client import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=kernel_env(), cwd=str(REPO / "notebooks"))
    return km


def execute(path: Path, lake_root: str, extra: str = "", timeout: int = 300, km=None):
    """Execute a notebook top to bottom (a failing cell raises), with the lake and a small local Spark
    set in a cell after its parameters cell, as a user would edit it. With `km`, in that running kernel
    after a namespace reset (the notebooks then share one Spark session, as on a Databricks cluster)."""
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell

    nb = _read(path)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    settings = (f"LAKE_ROOT = {lake_root!r}\n"
                "OVERRIDES = OVERRIDES + ['spark.local_master=local[2]', 'spark.driver_memory=1g', "
                "'spark.shuffle_partitions=4']\n" + extra)
    nb.cells.insert(index + 1, new_code_cell(settings))
    nb.cells.insert(0, new_code_cell("get_ipython().run_line_magic('reset', '-f')"))
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", km=km,
                            resources={"metadata": {"path": str(REPO / "notebooks")}})
    client.execute(**({} if km is not None else {"env": kernel_env()}))
    return nb


def outputs_of(cell, mime: str = "text/html") -> str:
    return "".join(str(o.get("data", {}).get(mime, "")) + (str(o.get("text", "")) if mime == "text/plain" else "")
                   for o in cell.get("outputs", []))


def tagged(nb, tag: str):
    return next(c for c in nb.cells if tag in c.metadata.get("tags", []))


class _Cards(HTMLParser):
    """Counts <img> elements whose src is an inline image, and the cards that hold them."""

    def __init__(self):
        super().__init__()
        self.images, self.cards = 0, 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img" and (attrs.get("src") or "").startswith("data:image/"):
            self.images += 1
        if tag == "div" and "rs-card" in (attrs.get("class") or ""):
            self.cards += 1


def test_notebooks_are_stored_without_outputs():
    assert {"browse_dataset", "funnel_quarantine", "retrieval", "balance"} <= set(NAMES)
    for path in NOTEBOOKS:
        nb = _read(path)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name
        params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1 and all(k in params[0].source for k in ("CONFIG", "OVERRIDES", "LAKE_ROOT")), path.name


@pytest.fixture(scope="module")
def lake_root(pipeline_lake):
    cfg, *_ = pipeline_lake
    return cfg.lake.root


@pytest.fixture(scope="module")
def kernel():
    km = start_kernel()
    yield km
    km.shutdown_kernel(now=True)


@pytest.mark.parametrize("name", NAMES)   # pytest.ini timeout: the first one also builds the lake
def test_notebook_runs_top_to_bottom(name, lake_root, kernel):
    nb = execute(REPO / "notebooks" / f"{name}.ipynb", lake_root, EXTRA.get(name, ""), km=kernel)
    for cell in nb.cells:
        assert not any(o.get("output_type") == "error" for o in cell.get("outputs", [])), name
    check = CHECKS.get(name)
    if check:
        check(nb)


def _check_browser(nb):
    cell = tagged(nb, "browser")
    cards = _Cards()
    cards.feed(outputs_of(cell))
    assert cards.cards == 5 and cards.images == 5, (cards.cards, cards.images)   # N = 5 in EXTRA


def _check_funnel(nb):
    images = outputs_of(tagged(nb, "dropped-images"))
    assert "exact_duplicate" in images and "min_side" in images
    parser = _Cards()
    parser.feed(images)
    assert parser.images > 0                                 # dropped images shown as thumbnails
    assert "emoji" in outputs_of(tagged(nb, "dropped-sentences"))
    quarantine = outputs_of(tagged(nb, "quarantine"))
    assert "blocked" in quarantine and "broken.warc.gz" in quarantine
    assert any("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


def _check_retrieval(nb):
    probes = outputs_of(tagged(nb, "probes"))
    assert "probe 0: cluster" in probes and "stored top-k" in probes


def _check_balance(nb):
    html = outputs_of(tagged(nb, "clusters"))
    assert "kept at cap 2" in html
    grids = re.findall(r"<h4[^>]*>cluster \d+: (\d+) kept at cap 2</h4>(.*?)(?=<h4|$)", html, re.S)
    assert grids and all(_count_images(body) <= 2 for _, body in grids)


def _check_overview(nb):
    text = "".join(outputs_of(c, "text/plain") + outputs_of(c) for c in nb.cells if c.cell_type == "code")
    assert "exact_duplicate" in text and "CREATE TABLE" in text


def _count_images(fragment: str) -> int:
    parser = _Cards()
    parser.feed(fragment)
    return parser.images


CHECKS = {"browse_dataset": _check_browser, "funnel_quarantine": _check_funnel, "retrieval": _check_retrieval,
          "balance": _check_balance, "explore_lake": _check_overview}
