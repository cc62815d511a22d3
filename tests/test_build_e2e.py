"""`responsenet build --stage download,segment` end to end, with the real stages and ffmpeg."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from responsenet.cli import app
from responsenet.testing.http import serve_directory
from responsenet.testing.media import make_video, truncate

runner = CliRunner()


def cli(*args: str):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def results(out: Path) -> dict[str, str]:
    """Finished stage outputs: relative folder -> finished_at."""
    return {str(p.parent.relative_to(out)): json.loads(p.read_text())["finished_at"]
            for p in (out / "work").rglob("_result.json")}


def leftovers(out: Path) -> list[str]:
    return [str(p) for p in out.rglob("*") if ".tmp-" in p.name or ".trash-" in p.name
            or p.name.endswith(".part")]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("media")
    make_video(folder / "good.mp4", duration=3.0, size=(160, 90))
    make_video(folder / "local.mp4", duration=4.0, size=(160, 90), fps=30)
    truncate(folder / "good.mp4", folder / "truncated.mp4")
    return folder


def test_good_and_broken_sources(media, tmp_path):
    out = tmp_path / "corpus"
    with serve_directory(media) as base:
        manifest = tmp_path / "m.yaml"
        manifest.write_text(f"""
- {{id: web, url: "{base}/good.mp4"}}
- {{id: local, path: "{media / 'local.mp4'}"}}
- {{id: broken, path: "{media / 'truncated.mp4'}"}}
- {{id: gone, url: "{base}/missing.mp4"}}
""")
        code, output = cli("build", "--manifest", str(manifest), "--out", str(out),
                           "--stage", "download,segment", "--quiet",
                           "--set", "download.min_duration=1", "--set", "download.retries=1")
        assert code == 0, output
        report = json.loads((out / "reports/build-latest.json").read_text())
        assert report["items"] == {"web": "ok", "local": "ok", "broken": "failed",
                                   "gone": "failed"}
        reasons = {f["item"]: f["reason"] for f in report["failures"]}
        assert reasons == {"broken": "corrupt_media", "gone": "not_found"}
        assert report["stages"]["download"]["done"] == 2
        assert report["stages"]["segment"]["done"] == 2
        assert report["config"]["download"]["min_duration"] == 1
        assert (out / "work/sources/web/segment").is_dir()
        first = results(out)

        code, output = cli("build", "--manifest", str(manifest), "--out", str(out),
                           "--stage", "download,segment", "--quiet",
                           "--set", "download.min_duration=1", "--set", "download.retries=1")
    assert code == 0, output
    again = json.loads((out / "reports/build-latest.json").read_text())
    for stage in ("download", "segment"):
        assert again["stages"][stage]["done"] == 0 and again["stages"][stage]["failed"] == 0
    assert again["stages"]["download"]["skipped"] == 4
    assert {f["item"]: f["cached"] for f in again["failures"]} == {"broken": True, "gone": True}
    assert results(out) == first
    assert len(list((out / "reports").glob("build-2*.json"))) == 2
    assert "remembered from an earlier run" in output


def test_strict_fails_when_any_source_fails(media, tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"- {{id: a, path: '{media / 'local.mp4'}'}}\n"
                        f"- {{id: b, path: '{media / 'truncated.mp4'}'}}\n")
    args = ["build", "--manifest", str(manifest), "--out", str(tmp_path / "o"), "--stage",
            "download", "--quiet"]
    assert cli(*args)[0] == 0
    assert cli(*args, "--strict")[0] == 1


def test_nothing_succeeding_exits_1(media, tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"- {{id: b, path: '{media / 'truncated.mp4'}'}}\n")
    code, output = cli("build", "--manifest", str(manifest), "--out", str(tmp_path / "o"),
                       "--stage", "download", "--quiet")
    assert code == 1, output
    assert "corrupt_media" in output


@pytest.mark.parametrize("row, fragment", [
    ("- {id: ../x, path: a.mp4}", ":1: id '../x' is not a safe file name"),
    ("- {id: a, path: a.mp4}\n- {id: a, path: b.mp4}", ":2: duplicate id 'a'"),
])
def test_bad_manifest_exits_2_and_writes_nothing(tmp_path, row, fragment):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(row + "\n")
    code, output = cli("build", "--manifest", str(manifest), "--out", str(tmp_path / "o"))
    assert code == 2, output
    assert f"{manifest}{fragment}" in output.replace("\n", "")
    assert not (tmp_path / "o").exists()


def test_sigkill_midway_then_resume(tmp_path):
    sources = tmp_path / "src"
    sources.mkdir()
    rows = []
    for i in range(6):
        make_video(sources / f"s{i}.mp4", duration=4.0, size=(320, 180), tone_hz=300 + 50 * i)
        rows.append(f"- {{id: s{i}, path: '{sources / f's{i}.mp4'}'}}")
    manifest = tmp_path / "m.yaml"
    manifest.write_text("\n".join(rows) + "\n")
    out = tmp_path / "corpus"
    cmd = [sys.executable, "-m", "responsenet", "build", "--manifest", str(manifest),
           "--out", str(out), "--stage", "download,segment", "--quiet"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if list((out / "work/sources").glob("*/segment/_result.json")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the build finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = results(out)
    assert any(key.endswith("segment") for key in before)
    assert len(before) < 12

    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    after = results(out)
    assert len(after) == 12
    assert {k: after[k] for k in before} == before  # completed work was not redone
    report = json.loads((out / "reports/build-latest.json").read_text())
    skipped = sum(report["stages"][s]["skipped"] for s in ("download", "segment"))
    assert skipped == len(before)
    assert leftovers(out) == []
