"""Every quarantine kind the source parsers can write is named in the README's list of kinds."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_source_error_kind_is_in_the_readme():
    code = "\n".join(p.read_text() for p in (REPO / "realsyn_spark" / "sources").glob("*.py"))
    # SourceError(uri, location, "kind", reason) and _error(..., "kind", ...) style calls
    kinds = set(re.findall(r"SourceError\([^()]*?,\s*[^,()]*?,\s*\"([a-z_]+)\"", code, re.S))

    assert len(kinds) >= 10, kinds   # the pattern still finds the calls
    readme = (REPO / "README.md").read_text()
    assert sorted(k for k in kinds if f"`{k}`" not in readme) == []
