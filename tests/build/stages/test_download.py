"""The download stage against real files: served over HTTP on 127.0.0.1, and local paths."""

from __future__ import annotations

import functools
import http.server
import io
import json
import os
import re
import socket
import tempfile
import threading
import urllib.error
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from responsenet.build.executors import SerialExecutor
from responsenet.build.report import BuildReport
from responsenet.build.runner import Runner
from responsenet.build.stages import download, stages
from responsenet.build.stages.base import StageContext
from responsenet.build.stages.download import (
    DownloadConfig,
    DownloadStage,
    backoff_delay,
    classify_download_error,
    error_reason,
    format_selector,
    parse_rate,
)
from responsenet.build.workspace import Workspace
from responsenet.errors import StageFailure, UsageError
from responsenet.manifest import SourceEntry
from responsenet.media import probe
from responsenet.testing.media import make_video, truncate

pytestmark = pytest.mark.network


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP byte ranges, as real servers do; ``/norange/...`` ignores them."""

    def log_message(self, *args):  # keep test output clean
        pass

    def send_head(self):
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        path = self.translate_path(self.path)
        if match is None or self.path.startswith("/norange/") or not os.path.isfile(path):
            return super().send_head()
        data = Path(path).read_bytes()
        first, last = match.groups()
        start = int(first) if first else max(0, len(data) - int(last))
        end = min(int(last), len(data) - 1) if first and last else len(data) - 1
        if start >= len(data):
            self.send_error(416)
            return None
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        return io.BytesIO(data[start:end + 1])


class QuietServer(http.server.ThreadingHTTPServer):
    """Clients that hang up early (yt-dlp sniffing a file, ffmpeg seeking) are not errors here."""

    def handle_error(self, request, client_address):
        pass


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("served")
    make_video(folder / "good.mp4", duration=3.0)
    make_video(folder / "audio.m4a", duration=3.0, video=False)
    make_video(folder / "mute.mp4", duration=3.0, audio=False)
    make_video(folder / "short.mp4", duration=0.5)
    truncate(folder / "good.mp4", folder / "broken.mp4")
    (folder / "norange").mkdir()
    os.link(folder / "good.mp4", folder / "norange" / "good.mp4")
    return folder


@pytest.fixture(scope="module")
def server(media_dir) -> str:
    handler = functools.partial(RangeHandler, directory=str(media_dir))
    httpd = QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    recorded: list[float] = []
    monkeypatch.setattr(download, "_sleep", recorded.append)
    return recorded


def run_stage(root: Path, source: SourceEntry, **config) -> tuple[dict, Path]:
    out = Path(tempfile.mkdtemp(dir=root, prefix="out-"))
    ctx = StageContext(item_id=source.id, source=source, config=DownloadConfig(**config),
                       out_dir=out, root=root)
    meta = DownloadStage().run(ctx)
    assert json.loads(json.dumps(meta)) == meta  # the runner stores it as JSON
    return meta, out


def failure(root: Path, source: SourceEntry, **config) -> StageFailure:
    with pytest.raises(StageFailure) as caught:
        run_stage(root, source, **config)
    assert source.id in caught.value.message
    return caught.value


def url_source(server: str, name: str, **kwargs) -> SourceEntry:
    return SourceEntry(id="s1", url=f"{server}/{name}", **kwargs)


class BuildConfig(BaseModel):
    download: DownloadConfig = DownloadConfig()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- over HTTP -------------------------------------------------------------------------------

def test_http_download_writes_the_probed_file(tmp_path, server, media_dir):
    meta, out = run_stage(tmp_path, url_source(server, "good.mp4"))
    path = out / meta["file"]
    assert meta["file"] == "source.mp4"
    assert path.read_bytes() == (media_dir / "good.mp4").read_bytes()
    assert meta["origin"] == "http" and meta["url"] == f"{server}/good.mp4"
    assert (meta["extractor"], meta["video_id"]) == ("generic", "good")
    assert meta["probe"]["duration"] == pytest.approx(3.0, abs=0.1)
    assert meta["probe"] == probe(path).to_dict()
    assert meta["bytes"] == path.stat().st_size
    assert meta["range_applied"] is None and meta["range_fallback"] is None
    assert meta["format_fallback"] is True  # 180 px served, 720 px preferred
    assert [p.name for p in out.iterdir()] == ["source.mp4"]


def test_time_range_is_cut_during_download(tmp_path, server):
    meta, out = run_stage(tmp_path, url_source(server, "good.mp4", start=0.5, end=2.0))
    assert meta["range_applied"] == [0.5, 2.0] and meta["range_fallback"] is None
    assert probe(out / meta["file"]).duration == pytest.approx(1.5, abs=0.15)


def test_time_range_falls_back_to_whole_file_when_server_cannot_seek(tmp_path, server):
    meta, out = run_stage(tmp_path, url_source(server, "norange/good.mp4", start=0.5, end=2.0))
    assert meta["range_applied"] is None and "ffmpeg" in meta["range_fallback"]
    assert probe(out / meta["file"]).duration == pytest.approx(3.0, abs=0.1)


def test_use_ranges_false_downloads_whole_file(tmp_path, server):
    meta, out = run_stage(tmp_path, url_source(server, "good.mp4", start=0.5, end=2.0),
                          use_ranges=False)
    assert meta["range_applied"] is None
    assert probe(out / meta["file"]).duration == pytest.approx(3.0, abs=0.1)


@pytest.mark.parametrize("name, reason", [
    ("missing.mp4", "not_found"),
    ("audio.m4a", "no_video"),
    ("mute.mp4", "no_audio"),
    ("broken.mp4", "corrupt_media"),
    ("short.mp4", "too_short"),
])
def test_bad_http_sources_fail_with_their_reason(tmp_path, server, sleeps, name, reason):
    assert failure(tmp_path, url_source(server, name)).reason == reason
    assert sleeps == []  # only network failures are retried


def test_requirements_can_be_relaxed(tmp_path, server):
    meta, _ = run_stage(tmp_path, url_source(server, "audio.m4a"), require_video=False)
    assert meta["file"] == "source.m4a" and not meta["probe"]["has_video"]
    meta, _ = run_stage(tmp_path, url_source(server, "short.mp4"), min_duration=0.2)
    assert meta["probe"]["duration"] == pytest.approx(0.5, abs=0.1)


def test_connection_refused_is_retried_with_exponential_backoff(tmp_path, sleeps):
    source = SourceEntry(id="s1", url=f"http://127.0.0.1:{closed_port()}/good.mp4")
    error = failure(tmp_path, source, retries=3, backoff_seconds=1.5, max_backoff_seconds=5)
    assert error.reason == "network" and "Connection refused" in error.message
    assert sleeps == [1.5, 3.0, 5.0]


def test_archive_skips_a_finished_download(tmp_path, server):
    source = url_source(server, "good.mp4")
    meta, _ = run_stage(tmp_path, source, archive="ids.txt")
    assert meta["archive_id"] == "generic good"
    assert (tmp_path / "ids.txt").read_text() == "generic good\n"  # relative to the build root
    error = failure(tmp_path, source, archive="ids.txt")
    assert error.reason == "in_archive" and "archive" in error.message


def test_archive_records_only_valid_downloads(tmp_path, server):
    source = url_source(server, "mute.mp4")
    for _ in range(2):  # a rejected file is not archived, so a retry fails the same way
        assert failure(tmp_path, source, archive="ids.txt").reason == "no_audio"
    assert not (tmp_path / "ids.txt").exists()


def test_missing_cookies_file_is_a_usage_error(tmp_path, server):
    with pytest.raises(UsageError, match="cookies file .*nope.txt not found"):
        run_stage(tmp_path, url_source(server, "good.mp4"), cookies=str(tmp_path / "nope.txt"))


# --- local paths -----------------------------------------------------------------------------

def test_local_file_is_hardlinked(tmp_path, media_dir):
    src = tmp_path / "talk.MP4"
    src.write_bytes((media_dir / "good.mp4").read_bytes())
    meta, out = run_stage(tmp_path, SourceEntry(id="s1", path=str(src)))
    assert meta["file"] == "source.mp4" and meta["origin"] == "local" and meta["linked"]
    assert meta["path"] == str(src) and meta["range_applied"] is None
    assert os.path.samefile(out / "source.mp4", src)
    assert meta["probe"]["duration"] == pytest.approx(3.0, abs=0.1)


def test_local_file_is_copied_when_links_fail(tmp_path, media_dir, monkeypatch):
    def no_link(*args):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    meta, out = run_stage(tmp_path, SourceEntry(id="s1", path=str(media_dir / "good.mp4")))
    copied = out / meta["file"]
    assert meta["linked"] is False
    assert not os.path.samefile(copied, media_dir / "good.mp4")
    assert copied.read_bytes() == (media_dir / "good.mp4").read_bytes()


def test_missing_local_file(tmp_path):
    source = SourceEntry(id="s1", path=str(tmp_path / "gone.mp4"))
    assert DownloadStage().input_fingerprint(source, DownloadConfig()) == {"missing": True}
    assert failure(tmp_path, source).reason == "not_found"


def test_local_fingerprint_follows_the_file(tmp_path):
    src = tmp_path / "a.mp4"
    src.write_bytes(b"x" * 10)
    source = SourceEntry(id="s1", path=str(src))
    first = DownloadStage().input_fingerprint(source, DownloadConfig())
    assert first["size"] == 10 and first == DownloadStage().input_fingerprint(source, None)
    src.write_bytes(b"x" * 11)
    assert DownloadStage().input_fingerprint(source, DownloadConfig()) != first


def test_runner_downloads_caches_and_records_failures(tmp_path, server, media_dir):
    entries = [SourceEntry(id="web", url=f"{server}/good.mp4"),
               SourceEntry(id="disk", path=str(media_dir / "good.mp4")),
               SourceEntry(id="gone", url=f"{server}/gone.mp4")]

    def build():
        runner = Runner(Workspace(tmp_path / "build"), entries, ["download"], BuildConfig(),
                        SerialExecutor(), progress=False, lookup={"download": DownloadStage}.get)
        return runner.run(BuildReport("m.yaml", str(tmp_path), ["download"], {})).stages["download"]

    first = build()
    assert (first.done, first.failed) == (2, 1)
    assert (tmp_path / "build/work/sources/web/download/source.mp4").is_file()
    second = build()
    assert (second.done, second.skipped) == (0, 3)


# --- pure parts ------------------------------------------------------------------------------

#: Messages as yt-dlp words them (some shortened), with the reason each must map to.
YTDLP_ERRORS = [
    ("not_found", ("ERROR: [generic] nope: Unable to download webpage: HTTP Error 404: Not Found "
                  "(caused by <HTTPError 404: Not Found>)")),
    ("not_found", "ERROR: unable to download video data: HTTP Error 410: Gone"),
    ("network", ("ERROR: [generic] x: Unable to download webpage: [Errno 111] Connection refused "
                "(caused by TransportError('[Errno 111] Connection refused'))")),
    ("network", "ERROR: [youtube] abc: Unable to download API page: The read operation timed out"),
    ("network", ("ERROR: [generic] x: Unable to download webpage: <urlopen error [Errno -3] "
                "Temporary failure in name resolution>")),
    ("network", "ERROR: [Errno -2] Name or service not known"),
    ("network", "ERROR: 1024 bytes read, 2048 more expected"),
    ("network", "ERROR: Downloaded 100 bytes, expected 200 bytes"),
    ("network", "ERROR: unable to download video data: HTTP Error 503: Service Unavailable"),
    ("unavailable", "ERROR: [youtube] dQw4w9WgXcQ: Video unavailable"),
    ("unavailable", ("ERROR: [youtube] abc: Private video. Sign in if you've been granted access "
                    "to this video")),
    ("unavailable", ("ERROR: [youtube] abc: Video unavailable. This video has been removed by the "
                    "uploader")),
    ("unavailable", "ERROR: [vimeo] 123: This video is not available"),
    ("geo_blocked", ("ERROR: [youtube] abc: Video unavailable. The uploader has not made this "
                    "video available in your country")),
    ("geo_blocked", ("ERROR: [dailymotion] x: The requested video is not available from your "
                    "location due to geo restriction")),
    ("auth_required", ("ERROR: [youtube] abc: Sign in to confirm you're not a bot. Use "
                      "--cookies-from-browser or --cookies for the authentication.")),
    ("auth_required", ("ERROR: [youtube] abc: Sign in to confirm your age. This video may be "
                      "inappropriate for some users.")),
    ("auth_required", "ERROR: [instagram] x: login required to access this content"),
    ("auth_required", "ERROR: unable to download video data: HTTP Error 403: Forbidden"),
    ("unsupported_url", "ERROR: Unsupported URL: https://example.com/page"),
    ("unsupported_url", "ERROR: 'not a url' is not a valid URL"),
    ("download_failed", "ERROR: ffmpeg exited with code 1"),
    ("download_failed", "ERROR: Requested format is not available"),
]


@pytest.mark.parametrize("reason, message", YTDLP_ERRORS)
def test_classify_download_error(reason, message):
    assert classify_download_error(message) == reason


def _download_error(message: str, cause: BaseException):
    from yt_dlp.utils import DownloadError

    return DownloadError(message, (type(cause), cause, None))


@pytest.mark.parametrize("cause, reason", [
    (urllib.error.HTTPError("http://x", 404, "Gone Away", {}, None), "not_found"),
    (urllib.error.HTTPError("http://x", 401, "Who", {}, None), "auth_required"),
    (urllib.error.HTTPError("http://x", 502, "Bad Gateway", {}, None), "network"),
    (ConnectionResetError(104, "peer went away"), "network"),
    (ValueError("odd"), "download_failed"),
])
def test_error_reason_falls_back_to_the_cause(cause, reason):
    assert error_reason(_download_error("ERROR: something odd happened", cause)) == reason


@pytest.mark.parametrize("text, rate", [
    ("2M", 2 * 1024**2), ("500K", 500 * 1024), ("1.5G", int(1.5 * 1024**3)), ("800", 800),
    ("2MiB", 2 * 1024**2), ("50k", 50 * 1024)])
def test_parse_rate(text, rate):
    assert parse_rate(text) == rate


def test_bad_rate_is_a_config_error():
    with pytest.raises(ValidationError, match="such as '500K'"):
        DownloadConfig(rate_limit="fast")


def test_backoff_doubles_up_to_the_cap():
    assert [backoff_delay(i, 2.0, 60.0) for i in range(7)] == [2, 4, 8, 16, 32, 60, 60]


def test_format_selector():
    assert format_selector(DownloadConfig()) == "bv*[height>=720]+ba/b[height>=720]/bv*+ba/b"
    assert format_selector(DownloadConfig(min_height=1080)).startswith("bv*[height>=1080]+ba/")
    assert format_selector(DownloadConfig(format="18")) == "18"


def test_stage_is_registered():
    stage = stages.get("download")
    assert stage is DownloadStage and stage.name == "download" and stage.requires == ()
