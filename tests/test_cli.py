"""The command line: exit codes and exact messages for usage errors and unavailable commands."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from responsenet import __version__
from responsenet.cli import app
from responsenet.testing.corpus import make_tiny_corpus

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_version():
    assert invoke("--version") == (0, f"responsenet {__version__}\n")


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("- {id: a, path: a.mp4}\n")
    return path


@pytest.mark.parametrize("args, fragment", [
    (["--stage", "downlod"], "Unknown stage 'downlod'. Did you mean 'download'?"),
    (["--stage", "refine"], "not available yet: stage 'refine'"),
    (["--stage", ","], "--stage needs 'all' or a comma list"),
    (["--set", "download.nope=1"], "download.nope: Extra inputs are not permitted"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["--ray-address", "auto"], "--ray-address is for --executor ray"),
    (["--stage", "download", "--force", "segment"], "--force segment: that stage is not part"),
])
def test_build_usage_errors_exit_2_and_write_nothing(tmp_path, manifest, args, fragment):
    out = tmp_path / "out"
    code, output = invoke("build", "--manifest", str(manifest), "--out", str(out), *args)
    assert code == 2, output
    assert fragment in " ".join(output.split()), output
    assert not out.exists()


def test_build_all_notes_the_stages_not_available_yet(tmp_path, manifest):
    code, output = invoke("build", "--manifest", str(manifest), "--out", str(tmp_path / "o"),
                          "--quiet")
    assert code == 1, output  # the only source does not exist
    flat = " ".join(output.split())
    from responsenet.build.stages import STAGE_ORDER, available_stages

    planned = ", ".join(s for s in STAGE_ORDER if s not in available_stages())
    assert f"stages not available yet, left out of 'all': {planned}" in flat
    assert "failed a in download: not_found" in flat


def test_validate_exit_codes(tmp_path):
    root = make_tiny_corpus(tmp_path / "c")
    code, output = invoke("validate", str(root))
    assert code == 0 and "valid" in output
    (root / "dataset.json").unlink()
    code, output = invoke("validate", str(root))
    assert code == 1 and "dataset.json" in output


def test_models_commands(tmp_path, monkeypatch):
    monkeypatch.setenv("RESPONSENET_MODELS", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code, output = invoke("models", "list")
    assert code == 0 and "i3d_fvd" in output
    code, output = invoke("models", "verify", "i3d_fvd")
    assert code == 1 and "weights_missing i3d_fvd" in output
    (tmp_path / "i3d_fvd").mkdir()
    (tmp_path / "i3d_fvd" / "i3d_torchscript.pt").write_bytes(b"x")
    code, output = invoke("models", "verify", "i3d_fvd")
    assert code == 0 and f"ok      i3d_fvd: {tmp_path / 'i3d_fvd'}" in output
    code, output = invoke("models", "fetch", "i3d")
    assert code == 2 and "Did you mean 'i3d_fvd'?" in output
