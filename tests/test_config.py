from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from responsenet.config import deep_merge, load_config, parse_override
from responsenet.errors import UsageError

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


def test_default_yaml_equals_the_built_in_defaults():
    assert load_config(PIPELINES / "default.yaml") == load_config()
    data = yaml.safe_load((PIPELINES / "default.yaml").read_text())
    assert data == load_config().model_dump(mode="json")


def test_cpu_small_changes_only_what_it_says():
    small, default = load_config(PIPELINES / "cpu-small.yaml"), load_config()
    assert small.segment.preset == "ultrafast" and small.download.min_height == 480
    assert small.segment.fps == default.segment.fps


def test_merge_order_cli_over_yaml_over_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("download: {min_height: 480, retries: 5}\n")
    config = load_config(path, ["download.min_height=1080", "segment.max_clip_seconds=30"])
    assert config.download.min_height == 1080  # CLI wins
    assert config.download.retries == 5  # YAML kept
    assert config.segment.max_clip_seconds == 30
    assert load_config(path, ["segment.max_clip_seconds=null"]).segment.max_clip_seconds is None


@pytest.mark.parametrize("text, value", [("a.b=720", 720), ("a.b=true", True), ("a.b=", None),
                                         ("a.b=2M", "2M"), ("a.b.c=[1, 2]", {"c": [1, 2]})])
def test_parse_override_reads_yaml_values(text, value):
    parsed = parse_override(text)
    inner = parsed["a"]["b"]
    assert inner == value


@pytest.mark.parametrize("overrides, fragment", [
    (["min_height=3"], "--set expects stage.key=value"),
    (["downlaod.min_height=3"], "Did you mean 'download'?"),
    (["refine.size=512"], "not available yet"),
    (["download.min_hieght=3"], "download.min_hieght: Extra inputs are not permitted"),
    (["download.retries=many"], "download.retries"),
])
def test_bad_overrides_are_usage_errors(overrides, fragment):
    with pytest.raises(UsageError, match=fragment.replace(".", r"\.").replace("?", r"\?")):
        load_config(None, overrides)


def test_bad_yaml_file(tmp_path):
    with pytest.raises(UsageError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(UsageError, match="expected a mapping"):
        load_config(tmp_path / "list.yaml")


def test_deep_merge_replaces_leaves_and_merges_dicts():
    assert deep_merge({"a": {"x": 1, "y": 2}, "b": 1}, {"a": {"y": 3}, "b": {"z": 0}}) == \
        {"a": {"x": 1, "y": 3}, "b": {"z": 0}}
