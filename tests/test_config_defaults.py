"""The shipped YAML and the typed config's defaults are one source of truth: every key of the YAML is a
field, and every field's code default equals the YAML's value (issue 9, item 5)."""
from __future__ import annotations

import yaml

from realsyn_spark.config import RealSynConfig, default_config_text


def _diff(yaml_tree: dict, code_tree: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(yaml_tree) | set(code_tree)):
        where = f"{prefix}{key}"
        if key not in code_tree:
            out.append(f"{where}: in the YAML, not a config field")
        elif key not in yaml_tree:
            out.append(f"{where}: a config field missing from the YAML")
        elif isinstance(code_tree[key], dict) and isinstance(yaml_tree[key], dict):
            out += _diff(yaml_tree[key], code_tree[key], where + ".")
        elif yaml_tree[key] != code_tree[key]:
            out.append(f"{where}: YAML {yaml_tree[key]!r} != code {code_tree[key]!r}")
    return out


def _normalise(value):
    if isinstance(value, tuple):
        return [_normalise(v) for v in value]
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    return value


def test_yaml_defaults_equal_code_defaults():
    shipped = _normalise(yaml.safe_load(default_config_text()))
    code = _normalise(RealSynConfig().model_dump(mode="json"))
    assert _diff(shipped, code) == []


def test_the_check_sees_a_disagreement():
    shipped = _normalise(yaml.safe_load(default_config_text()))
    shipped["fetch"]["user_agent"] = "something else"
    assert _diff(shipped, _normalise(RealSynConfig().model_dump(mode="json"))) == [
        "fetch.user_agent: YAML 'something else' != code 'realsyn-spark/0.1 (+CLIP dataset research)'"]


def test_executors_get_typed_sections_not_dicts():
    """Issue 9: no `model_dump()` dicts with their own fallbacks reach executor code; the sections pickle."""
    import pickle
    import re
    from pathlib import Path

    from pyspark import cloudpickle

    from realsyn_spark.config import EmbedConfig, FetchConfig
    from realsyn_spark.stages.fetch import fetch_urls
    from udfs.clip_embed import image_embedder

    root = Path(__file__).resolve().parents[1]
    for path in [*root.joinpath("udfs").glob("*.py"), *root.joinpath("realsyn_spark", "stages").glob("*.py")]:
        source = path.read_text()
        assert not re.search(r"\.model_dump\(\)", source), path
        assert not re.search(r"\bcfg\.get\(|\bcfg\[\"", source), path
    cfg = EmbedConfig(prefetch_batches=5)
    body = pickle.loads(cloudpickle.dumps(image_embedder(cfg)))
    cells = [c.cell_contents for c in body.__closure__]
    assert cfg in cells and 5 in cells                     # the section itself, its value, no fallback
    assert any(isinstance(c, FetchConfig) for c in
               (x.cell_contents for x in pickle.loads(cloudpickle.dumps(fetch_urls(FetchConfig()))).__closure__))
